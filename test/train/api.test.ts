// The programmatic API as the README shows it: train(resolveConfig({...})) from code, with
// rewards given as functions (sync and async) beside built-ins, each receiving the example
// (prompt, answer and the JSONL line's other fields); and the kernels' refusal of number[]
// and Float64Array inputs, naming the one conversion to make.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, groupAdvantages, resolveConfig, tokenLogprobs, train, type Example, type RewardFn } from '../../src/index.js';

const dir = mkdtempSync(join(tmpdir(), 'lgrpo-api-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('train(resolveConfig({...})) with reward functions, sync and async, that see the JSONL fields', async () => {
  const task = join(dir, 'task.jsonl');
  writeFileSync(task, Array.from({ length: 12 }, (_, i) =>
    JSON.stringify({ prompt: `${i}+1=? (#### n)\n`, answer: i + 1, solution: `#### ${i + 1}`, unit: i % 2 ? 'apples' : 'pears' })).join('\n') + '\n');
  const seen: Example[] = [];
  const brevity: RewardFn = (example, completion) => {
    seen.push(example);
    return completion.length < 10 ? 1 : 0;
  };
  const fieldCheck = async (example: Example): Promise<number> => {
    await new Promise((r) => setTimeout(r, 1));
    return example.unit === 'apples' ? 0.5 : 0;
  };
  const { config, warnings } = resolveConfig({
    task, reward: ['math', brevity, { fn: fieldCheck, weight: 0.25, name: 'units' }], steps: 1, 'prompts-per-step': 2, 'group-size': 2,
    'sft-steps': 3, 'eval-every': 0, 'max-new-tokens': 8, out: join(dir, 'run'),
  });
  assert.deepEqual(config.reward.map((r) => [r.kind, r.kind === 'function' ? r.name : '', r.weight]), [['builtin', '', 1], ['function', 'brevity', 1], ['function', 'units', 0.25]]);
  assert.ok(!warnings.some((w) => /random weights/.test(w)));
  const result = await train(config, { progress: null });
  assert.equal(result.step, 1);
  assert.equal(result.warmup?.steps, 3);
  assert.equal(seen.length, 4);  // P × G completions
  for (const e of seen) {
    assert.equal(typeof e.prompt, 'string');
    assert.equal(typeof e.answer, 'string');
    assert.ok(e.unit === 'apples' || e.unit === 'pears', JSON.stringify(e));
    assert.match(e.solution as string, /^#### \d+$/);
  }
  const metrics = readFileSync(join(dir, 'run', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const step = metrics.find((m) => m.kind === 'train');
  for (const key of ['reward_math', 'reward_brevity', 'reward_units']) assert.ok(Number.isFinite(step[key]), `${key} in ${JSON.stringify(step)}`);
  // config.json names the functions; as a --config file it asks for them again.
  const saved = JSON.parse(readFileSync(join(dir, 'run', 'config.json'), 'utf8'));
  assert.deepEqual(saved.reward, ['math', 'function:brevity', 'function:units=0.25']);
  assert.throws(() => resolveConfig({ config: join(dir, 'run', 'config.json') }),
    (e: unknown) => e instanceof ConfigError && e.problems.some((p) => p.startsWith('--reward: "function:brevity" was a reward function passed from code')));
  assert.throws(() => resolveConfig({ reward: [{ fn: brevity, weight: Number.NaN }] }), /the weight of reward function .* must be a finite number/);
});

test('number[] and Float64Array inputs are refused with the conversion to make', () => {
  assert.throws(() => groupAdvantages([1, 0, 1] as unknown as Float32Array, Int32Array.of(0, 0, 1)),
    /rewards: expected a Tensor or a TypedArray, got an Array; convert it once with Float32Array\.from\(values\)/);
  assert.throws(() => groupAdvantages(Float32Array.of(1, 0, 1), [0, 0, 1] as unknown as Int32Array),
    /groupIds: expected a Tensor or a TypedArray, got an Array; convert it once with Int32Array\.from\(values\)/);
  assert.throws(() => tokenLogprobs(new Float64Array(6) as unknown as Float32Array, Int32Array.of(0, 1)),
    /logits: expected Float32Array .*got Float64Array; convert it once with Float32Array\.from\(values\)/);
  // Converted once, the same values work.
  const out = groupAdvantages(Float32Array.from([1, 0, 1]), Int32Array.from([0, 0, 1]));
  assert.equal(out.advantages.length, 3);
});
