// `bench --engine --device cuda:0 --quick --json` end to end, where this build has a CUDA
// device (the emulated cuda:0 in CI): the report's shape, that every rate is finite and
// positive, and that the steps make no cudaMalloc once warm. Never how fast anything is.
// Without a device, the command must say why in one clear error.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildInfo } from '../../src/index.js';
import { assertPositive, cli as run } from './run_cli.js';

const info = buildInfo();
const DEVICE = info.cudaDevices.length > 0 ? 'cuda:0' : undefined;

test('bench --engine --device cuda:0 --quick --json reports the CUDA engine end to end', { skip: DEVICE ? false : 'no CUDA device in this build' }, () => {
  const r = run(['bench', '--engine', '--device', DEVICE!, '--quick', '--json', '--no-torch']);
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.schema, 'lgrpo-native-engine-bench-cuda/1');
  assert.deepEqual(report.errors, []);
  assert.deepEqual(report.skipped, []);
  assert.equal(report.device.emulated, info.cudaEmulated);
  assertPositive(report.ownGemmGflops, 'ownGemmGflops');
  assertPositive(report.copyGBs, 'copyGBs');
  assert.deepEqual(report.cases.map((c: { name: string }) => c.name), ['qwen-shape-quick']);
  for (const c of report.cases) {
    const at = (key: string) => `${c.name}: ${key}`;
    for (const key of ['medianMs', 'tokensPerS', 'gflopPerS', 'fractionOfOwnGemm']) assertPositive(c.train[key], at(`train.${key}`));
    assert.ok(Number.isFinite(c.train.loss), at(`train.loss = ${c.train.loss}`));
    for (const [phase, ms] of Object.entries(c.train.phases)) assert.ok(Number.isFinite(ms as number) && (ms as number) >= 0, at(`phase ${phase}`));
    for (const key of ['medianMs', 'tokensPerS', 'bytesPerS', 'fractionOfCopyBandwidth']) assertPositive(c.decode[key], at(`decode.${key}`));
    assert.equal(c.decode.newTokens, c.decode.batch * 3, at('decode.newTokens'));
    for (const key of ['modelStateBytes', 'trainingArenaBytes', 'inferenceArenaBytes', 'deviceInUseBytes']) assertPositive(c.memory[key], at(`memory.${key}`));
  }
  assert.match(r.stderr, /qwen-shape-quick: training step/);
  const text = run(['bench', '--engine', '--device', DEVICE!, '--quick', '--no-torch']);
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /\| config \| params \| B×T \| step ms/);
});

test('bench --engine --device cuda:N says why when there is no such device', () => {
  const r = run(['bench', '--engine', '--device', 'cuda:7', '--quick', '--no-torch']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, info.cuda ? /device: cuda:7 is not available/ : /built without CUDA/);
});
