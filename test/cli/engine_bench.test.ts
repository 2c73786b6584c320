// `bench --engine --quick --json` end to end, spawning the compiled bin as a user would:
// the report's shape, and that every rate is finite and positive. Never how fast anything
// is, and without the PyTorch comparison (--no-torch), which needs Python and torch.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { openReadProbe, timeAlternating } from '../../src/bench/harness.js';
import { assertPositive, cli as run } from './run_cli.js';

test('timeAlternating calls its functions in turn, warm-up rounds first, and stops at the runs asked for', () => {
  const calls: string[] = [];
  const { timings, ratios } = timeAlternating([() => calls.push('a'), () => calls.push('b'), () => calls.push('c')],
    { warmup: 2, minRuns: 4, minSeconds: 0 });
  assert.equal(calls.join(''), 'abc'.repeat(6));
  assert.deepEqual(timings.map((t) => t.runs), [4, 4, 4]);
  for (const t of timings) assert.ok(t.medianMs >= 0 && t.minMs <= t.medianMs);
  assert.equal(ratios.length, 3);
  ratios.forEach((row, i) => assert.ok(Object.is(row[i], 1) || Number.isNaN(row[i]), `ratios[${i}][${i}] = ${row[i]}`));
});

test('timeAlternating runs `between` before every timed round and after the last, never in the warm-up', () => {
  const calls: string[] = [];
  timeAlternating([() => calls.push('a'), () => calls.push('b')], { warmup: 1, minRuns: 3, minSeconds: 0 }, () => calls.push('|'));
  assert.equal(calls.join(''), 'ab|ab|ab|ab|');
});

test('openReadProbe measures the read bandwidth synchronously, as often as asked, and closes its workers', async () => {
  const probe = await openReadProbe({ bytes: 8 * 1024 * 1024, threads: 2 });
  try {
    const first = probe.measure();
    assertPositive(first, 'measure()');
    probe.measure();
    assert.equal(probe.samples.length, 2);
    assert.equal(probe.samples[0], first);
    for (const s of probe.samples) assertPositive(s, 'samples');
  } finally {
    await probe.close();
  }
});

test('bench --engine --quick --json reports finite positive tokens/s for training and decoding', () => {
  const r = run(['bench', '--engine', '--quick', '--json', '--no-torch']);
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.schema, 'lgrpo-native-engine-bench/1');
  assert.equal(report.quick, true);
  assert.deepEqual(report.errors, []);
  assert.deepEqual(report.skipped, []);
  assertPositive(report.peakGflops, 'peakGflops');
  assertPositive(report.bandwidth.readGBs, 'bandwidth.readGBs');
  assert.equal(report.torch.available, false);
  assert.match(report.torch.reason, /--no-torch/);
  assert.deepEqual(report.cases.map((c: { name: string }) => c.name), ['small-quick', 'qwen-shape-quick']);

  for (const c of report.cases) {
    const at = (key: string) => `${c.name}: ${key}`;
    assert.equal(c.torch, undefined, at('torch ran despite --no-torch'));
    assertPositive(c.model.parameters, at('model.parameters'));
    // The FLOP count is a formula of the shapes: its linear part must be 6 · weights · tokens.
    assert.equal(c.train.flops.linear, 6 * c.train.flops.linearWeights * c.batch * c.seq, at('flops.linear'));
    assertPositive(c.train.flops.attention, at('flops.attention'));
    for (const key of ['medianMs', 'minMs', 'runs', 'tokensPerS', 'gflopPerS', 'fractionOfPeak'])
      assertPositive(c.train[key], at(`train.${key}`));
    for (const [phase, ms] of Object.entries(c.train.phases))
      assert.ok(Number.isFinite(ms as number) && (ms as number) >= 0, at(`train.phases.${phase} = ${ms}`));
    assert.ok(Number.isFinite(c.train.loss), at(`train.loss = ${c.train.loss}`));
    // tokens/s is B·T over the median step, so the two must agree.
    assert.ok(Math.abs(c.train.tokensPerS * c.train.medianMs / 1000 - c.batch * c.seq) < 1e-6 * c.batch * c.seq, at('train.tokensPerS'));
    for (const precision of ['decode', 'decodeBf16']) {
      for (const key of ['medianMs', 'minMs', 'runs', 'tokensPerS', 'newTokens', 'promptTokens', 'weightGBs', 'fractionOfRead', 'readBesideGBs', 'fractionOfReadBeside', 'prefillMs', 'batch'])
        assertPositive(c[precision][key], at(`${precision}.${key}`));
      // The steps' rate is undefined (NaN, null in JSON) only when the whole call was not
      // slower than its prefill: possible for the quick run's tiny model on a busy machine.
      const d = c[precision];
      if (d.stepWeightGBs === null) assert.ok(d.medianMs <= d.prefillMs && d.stepFractionOfRead === null && d.stepFractionOfReadBeside === null, at(`${precision}.stepWeightGBs`));
      else for (const key of ['stepWeightGBs', 'stepFractionOfRead', 'stepFractionOfReadBeside']) assertPositive(d[key], at(`${precision}.${key}`));
      assert.equal(c[precision].newTokens, c[precision].batch * c.maxNewTokens, at(`${precision}.newTokens`));
    }
    assertPositive(c.bf16Speedup, at('bf16Speedup'));
    assert.ok(c.gemm.length > 0, at('gemm rows'));
    for (const g of c.gemm) {
      assertPositive(g.gflopPerS, at(`gemm ${g.name}`));
      assertPositive(g.fractionOfPeak, at(`gemm ${g.name} fraction`));
    }
    for (const key of ['modelStateBytes', 'trainingArenaBytes', 'inferenceArenaBytes', 'peakRssBytes'])
      assertPositive(c.memory[key], at(`memory.${key}`));
  }
  // Progress goes to stderr, phase by phase.
  assert.match(r.stderr, /small-quick: training step/);
  assert.match(r.stderr, /qwen-shape-quick: decoding/);
});

test('bench --engine prints a text report and rejects unknown configurations', () => {
  const r = run(['bench', '--engine', '--quick', '--no-torch', '--only', 'small-quick']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /engine bench \(--quick/);
  assert.match(r.stdout, /Training step/);
  assert.match(r.stdout, /Decoding/);
  assert.match(r.stdout, /PyTorch: comparison not requested/);
  const bad = run(['bench', '--engine', '--quick', '--no-torch', '--only', 'noSuchConfig']);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /only: unknown engine configuration 'noSuchConfig'/);
});
