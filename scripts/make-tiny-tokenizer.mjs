#!/usr/bin/env node
// Writes assets/tiny/tokenizer.json and tokenizer_config.json: the tokenizer of the built-in
// tiny policy. One token per character (printable ASCII and "\n") plus four special tokens,
// written as a BPE model with no merges, so @huggingface/tokenizers (and Python `tokenizers`)
// load it as an ordinary BPE tokenizer — the same code path as a real model's. Deterministic:
// running it again rewrites identical files.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
// An optional argument writes elsewhere (relative to the repository root), e.g. for a test.
const outDir = resolve(root, process.argv[2] ?? 'assets/tiny');

// Ids 0..3 are the special tokens, so they stay put if the character set ever grows.
const SPECIALS = ['<|pad|>', '<|bos|>', '<|endoftext|>', '<|unk|>'];
const CHARS = ['\n'];
for (let c = 0x20; c <= 0x7e; c++) CHARS.push(String.fromCharCode(c));

const vocab = {};
[...SPECIALS, ...CHARS].forEach((token, id) => { vocab[token] = id; });

const special = (content) => ({
  id: vocab[content], content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
});

const tokenizer = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens: SPECIALS.map(special),
  normalizer: null,
  // No pre-tokenizer: with no merges, BPE splits the text into characters on its own.
  pre_tokenizer: null,
  // Prompts start with <|bos|> (as Llama's do): the tiny model gets a fixed first position.
  post_processor: {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: '<|bos|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
    pair: [
      { SpecialToken: { id: '<|bos|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
      { SpecialToken: { id: '<|bos|>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } },
    ],
    special_tokens: { '<|bos|>': { id: '<|bos|>', ids: [vocab['<|bos|>']], tokens: ['<|bos|>'] } },
  },
  decoder: { type: 'Fuse' },
  model: {
    type: 'BPE',
    dropout: null,
    unk_token: '<|unk|>',
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: false,
    byte_fallback: false,
    ignore_merges: false,
    vocab,
    merges: [],
  },
};

const config = {
  tokenizer_class: 'PreTrainedTokenizerFast',
  bos_token: '<|bos|>',
  eos_token: '<|endoftext|>',
  pad_token: '<|pad|>',
  unk_token: '<|unk|>',
  add_bos_token: true,
  add_eos_token: false,
  // Character tokens must decode exactly: no " ." -> "." clean-up.
  clean_up_tokenization_spaces: false,
  model_max_length: 512,
};

mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, 'tokenizer.json'), JSON.stringify(tokenizer, null, 2) + '\n');
writeFileSync(join(outDir, 'tokenizer_config.json'), JSON.stringify(config, null, 2) + '\n');
console.log(`wrote ${outDir}/tokenizer.json (${Object.keys(vocab).length} tokens) and tokenizer_config.json`);
