// Issue 12 items 12-15: a reward that never settles, a run killed before its first
// checkpoint, a task file edited before --resume, a reward beyond float32's range.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { resolveConfig } from '../../src/train/config.js';
import { readMetrics } from '../../src/train/metrics.js';
import { scoreAll, type RewardWarning } from '../../src/train/rewards/loader.js';
import { train } from '../../src/train/trainer.js';
import { groupAdvantages } from '../../src/index.js';

const root = mkdtempSync(join(tmpdir(), 'lgrpo-reliability-'));
after(() => rmSync(root, { recursive: true, force: true }));
let counter = 0;
const freshDir = (label: string) => join(root, `${label}-${++counter}`);
const quiet = () => ({ write: () => true, isTTY: false });
const examples = [{ prompt: 'a', answer: '1' }, { prompt: 'b', answer: '2' }];

function tinyArgs(out: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    out, steps: 1, 'sft-steps': 0, 'prompts-per-step': 2, 'group-size': 2, 'max-new-tokens': 4,
    'eval-size': 2, 'eval-every': 0, 'save-every': 1, warmup: 0, reward: ['math'],
    // A constant rate: a resumed run may then raise --steps (a decaying default refuses it).
    'lr-schedule': 'constant', ...extra,
  };
}

// Item 12: the step waited forever (and Ctrl-C with it).
test('a reward call that never settles counts as a failure after the timeout', { timeout: 20_000 }, async () => {
  const warnings: RewardWarning[] = [];
  const start = Date.now();
  const r = await scoreAll([{ name: 'stuck', fn: () => new Promise<number>(() => {}), weight: 1, timeoutSeconds: 0.2 },
    { name: 'one', fn: () => 1, weight: 1 }], examples, ['x', 'y'], { onWarning: (w) => warnings.push(w) });
  assert.ok(Date.now() - start < 5000);
  assert.deepEqual([...r.total], [1, 1]);
  assert.equal(r.failures, 2);
  assert.match(warnings[0].message, /reward "stuck" did not settle within 0\.2 s \(--reward-timeout\) for completion 0/);
});

test('--reward-timeout: a run with a reward that never settles finishes, counting failures', { timeout: 120_000 }, async () => {
  const stuck = join(root, 'stuck.mjs');
  writeFileSync(stuck, 'export default () => new Promise(() => {});\n');
  const out = freshDir('timeout');
  const result = await train(resolveConfig(tinyArgs(out, { reward: ['math', stuck], 'reward-timeout': 0.3 })).config, { progress: quiet() });
  assert.equal(result.step, 1);
  const step = readMetrics(join(out, 'metrics.jsonl')).find((m) => m.kind === 'train')!;
  assert.equal(step.reward_failures, 4);
  assert.throws(() => resolveConfig(tinyArgs(out, { 'reward-timeout': -1 })), /reward-timeout/);
});

// Item 15: 1e39 is finite in JS and Infinity in f32; the run aborted with "rewards: element 1 is Infinity".
test('a reward beyond float32 range is a counted failure, not an abort', async () => {
  const warnings: RewardWarning[] = [];
  const r = await scoreAll([{ name: 'huge', fn: (ex) => (ex.answer === '2' ? 1e39 : 1), weight: 1 }], examples, ['x', 'y'], { onWarning: (w) => warnings.push(w) });
  assert.deepEqual([...r.total], [1, 0]);
  assert.equal(r.failures, 1);
  assert.match(warnings[0].message, /returned 1e\+39, beyond float32's range/);
  assert.doesNotThrow(() => groupAdvantages(Float32Array.from(r.total), Int32Array.of(0, 0)));
});

// Each term fits float32, but weights above 1 carried the sum to Infinity, which training
// met later as "rewards: element 0 is Infinity".
test('a weighted reward sum beyond float32 range is a clear error naming the terms', async () => {
  const big = { name: 'big', fn: () => 3e38, weight: 2 };
  await assert.rejects(scoreAll([big, { name: 'one', fn: () => 1, weight: 1 }], examples, ['x', 'y']), (e: Error) =>
    e instanceof RangeError && /^rewards: the weighted sum for completion 0 .* is 6e\+38, beyond float32's range/.test(e.message) &&
    /big=2 × 3e\+38, one=1 × 1/.test(e.message));
  await assert.rejects(scoreAll([{ ...big, weight: -1.5 }], examples, ['x', 'y']), /is -4\.5\d*e\+38, beyond float32's range/);
  // Only the sum must fit: a weight of 2 cancelled by another term is a reward, and so is
  // a sum at the edge of the range.
  const r = await scoreAll([big, { ...big, name: 'neg', weight: -1 }], examples, ['x', 'y']);
  assert.deepEqual([...r.total], [3e38, 3e38]);
  const edge = await scoreAll([{ ...big, weight: 1 }, { name: 'small', fn: () => 1e37, weight: 4 }], examples, ['x', 'y']);
  assert.ok(edge.total.every((t) => t <= 3.4028234663852886e38 && t > 3e38));
});

// Item 14: the config hash covered the task's path, not its contents.
test('--resume after the task file was edited is refused, saying so', { timeout: 120_000 }, async () => {
  const file = join(root, 'sums.jsonl');
  const lines = [];
  for (let a = 1; a <= 4; a++) for (let b = 1; b <= 4; b++) lines.push(JSON.stringify({ question: `${a}+${b}=?\n`, answer: a + b }));
  writeFileSync(file, lines.join('\n') + '\n');
  const out = freshDir('edited');
  await train(resolveConfig(tinyArgs(out, { task: file })).config, { progress: quiet() });
  appendFileSync(file, JSON.stringify({ question: '9+9=?\n', answer: 18 }) + '\n');
  await assert.rejects(train(resolveConfig({ resume: out, steps: 2 }).config, { progress: quiet() }),
    /different configuration \(the contents of --task .*sums\.jsonl changed since\)/);
});

// Item 13: killed before its first checkpoint, a run directory was a dead end.
test('--restart starts over a run that stopped before its first checkpoint, and only such a run', { timeout: 120_000 }, async () => {
  const out = freshDir('killed');
  mkdirSync(out);
  writeFileSync(join(out, 'metrics.jsonl'), JSON.stringify({ kind: 'eval', step: 0, accuracy: 0 }) + '\n');
  await assert.rejects(train(resolveConfig(tinyArgs(out)).config, { progress: quiet() }), /already holds metrics.*--restart starts it over/);
  assert.throws(() => resolveConfig({ resume: out }), /stopped before its first checkpoint: start it over with --out .* --restart/);
  const result = await train(resolveConfig(tinyArgs(out, { restart: true })).config, { progress: quiet() });
  assert.equal(result.step, 1);
  assert.ok(readFileSync(join(out, 'metrics.jsonl'), 'utf8').includes('"kind":"train"'));
  // Now it holds a checkpoint: --restart would throw that away, so it is refused.
  await assert.rejects(train(resolveConfig(tinyArgs(out, { restart: true, steps: 2 })).config, { progress: quiet() }), /--restart: .* holds 1 checkpoint/);
});

// Item 15: an over-long prompt failed only when it was sampled, blaming --max-new-tokens.
test('an over-long prompt in a JSONL task is an error naming it before training starts', { timeout: 120_000 }, async () => {
  const file = join(root, 'long.jsonl');
  const lines = [];
  for (let a = 1; a <= 4; a++) for (let b = 1; b <= 4; b++) lines.push(JSON.stringify({ question: `${a}+${b}=?\n`, answer: a + b }));
  lines[5] = JSON.stringify({ question: `${'1+'.repeat(200)}1=?\n`, answer: 201 });
  writeFileSync(file, lines.join('\n') + '\n');
  const out = freshDir('long');
  await assert.rejects(train(resolveConfig(tinyArgs(out, { task: file })).config, { progress: quiet() }),
    /--task .*: (a training|held-out) example.*\(prompt "1\+1\+.*\) is \d+ tokens; with --max-new-tokens 4 it exceeds the model's max_position_embeddings 128/);
});

// Item 4's twin in the trainer: Node's recursive mkdir spun forever at 100% CPU under /proc.
// A child process: a synchronous spin cannot be interrupted by a test timeout.
test('--out under /proc fails at once instead of spinning', () => {
  const main = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
  const r = spawnSync(process.execPath, [main, 'train', '--out', '/proc/lgrpo-run/x', '--steps', '1'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.signal, null, 'spun until killed');
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /out: cannot create \/proc\/lgrpo-run\/x/);
});
