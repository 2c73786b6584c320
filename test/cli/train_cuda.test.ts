// `train --device cuda:0` as a user runs it: the whole loop (warm-up, rollouts, rewards,
// token passes, the loss, backward, AdamW, λ, evals, checkpoints) on the device, against
// the same run on the CPU. Runs wherever a CUDA device exists (the emulated cuda:0 in CI).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { buildInfo } from '../../src/index.js';
import { cli } from './run_cli.js';

const root = mkdtempSync(join(tmpdir(), 'lgrpo-train-cuda-'));
after(() => rmSync(root, { recursive: true, force: true }));

const DEVICE = buildInfo().cudaDevices.length > 0 ? 'cuda:0' : undefined;
const RUN = ['train', '--steps', '3', '--sft-steps', '3', '--prompts-per-step', '2', '--group-size', '4', '--max-new-tokens', '12',
  '--eval-size', '4', '--eval-every', '3', '--loss', 'lambda', '--lambda-init', '0.5', '--beta', '0.05', '--seed', '5'];

type Record = { [key: string]: unknown };
const metrics = (dir: string): Record[] => readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record);

test('train --device cuda:0 --steps 3 gives the CPU run\'s metrics', { skip: DEVICE ? false : 'no CUDA device in this build' }, () => {
  const cpu = cli([...RUN, '--out', join(root, 'cpu')]);
  assert.equal(cpu.status, 0, cpu.stderr);
  const cuda = cli([...RUN, '--device', DEVICE!, '--out', join(root, 'cuda')]);
  assert.equal(cuda.status, 0, cuda.stderr);
  const a = metrics(join(root, 'cpu')), b = metrics(join(root, 'cuda'));
  assert.deepEqual(b.map((r) => `${r.kind} ${r.step}`), a.map((r) => `${r.kind} ${r.step}`));
  assert.ok(a.some((r) => r.kind === 'train') && a.some((r) => r.kind === 'eval'), 'the runs trained and evaluated');
  // f32 sums in another order on the device: equal samples (the draws agree), numbers within 1e-3.
  const timing = /second|time|ms$|PerS|elapsed|eta/i;
  for (let i = 0; i < a.length; i++)
    for (const [key, value] of Object.entries(a[i])) {
      if (typeof value !== 'number' || timing.test(key)) continue;
      const other = b[i][key] as number;
      assert.ok(Number.isFinite(other) || other === value, `${a[i].kind} ${a[i].step} ${key}: ${other} on ${DEVICE}`);
      assert.ok(Math.abs(other - value) <= 1e-3 * Math.max(1, Math.abs(value)),
        `${a[i].kind} ${a[i].step} ${key}: ${other} on ${DEVICE}, ${value} on the CPU`);
    }
});

test('eval and sample --device cuda:0 give the CPU\'s results for a CPU-trained run', { skip: DEVICE ? false : 'no CUDA device in this build' }, () => {
  const run = join(root, 'for-eval');
  const trained = cli([...RUN, '--out', run]);
  assert.equal(trained.status, 0, trained.stderr);
  const evals = ['cpu', DEVICE!].map((device) => cli(['eval', '--model', run, '--eval-size', '4', '--json', '--device', device]));
  for (const e of evals) assert.equal(e.status, 0, e.stderr);
  const [a, b] = evals.map((e) => JSON.parse(e.stdout) as Record);
  assert.equal(b.accuracy, a.accuracy);
  assert.equal(b.meanLength, a.meanLength);
  const samples = ['cpu', DEVICE!].map((device) => cli(['sample', '--model', run, '--prompt', '12+7=? (#### n)\\n', '--json', '--device', device]));
  for (const s of samples) assert.equal(s.status, 0, s.stderr);
  assert.equal(samples[1].stdout, samples[0].stdout, 'greedy completions on the device and on the CPU');
  const bad = cli(['sample', '--model', run, '--prompt', 'x', '--device', 'gpu']);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /--device: expected 'cpu' or 'cuda:N'/);
});

test('the training loop on cuda:0 makes no cudaMalloc after its first step (freed blocks are reused)', { skip: DEVICE ? false : 'no CUDA device in this build' }, async () => {
  const { cudaMemoryStats } = await import('../../src/index.js');
  const { resolveConfig, train } = await import('../../src/train/trainer.js');
  const { config } = resolveConfig({ steps: 6, 'sft-steps': 4, 'prompts-per-step': 2, 'group-size': 4, 'max-new-tokens': 12,
    'eval-size': 4, 'eval-every': 100, device: DEVICE!, out: join(root, 'malloc') });
  const calls: number[] = [];
  await train(config, { progress: null, onStep: () => { calls.push(cudaMemoryStats(DEVICE!).mallocCalls); } });
  assert.equal(calls.length, 6);
  assert.deepEqual(calls.slice(1), Array(5).fill(calls[0]), `cudaMalloc calls after each step: ${calls.join(', ')}`);
});
