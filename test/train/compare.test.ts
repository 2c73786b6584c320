// compare's statistics: Student-t intervals, differences paired by seed (not the
// difference of two unpaired means), the printed table, and the per-loss mean curves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatCompareTable, meanCurves, meanInterval, summariseComparison, tQuantile975, type CompareRun } from '../../src/train/compare.js';
import { assertClose } from '../helpers.js';

test('t quantiles: the table, then an expansion that meets the normal quantile', () => {
  assert.equal(tQuantile975(1), 12.706);
  assert.equal(tQuantile975(4), 2.776);
  assertClose(tQuantile975(40), 2.021, { atol: 1e-3 }, 't(40)');
  assertClose(tQuantile975(120), 1.980, { atol: 1e-3 }, 't(120)');
  assert.ok(tQuantile975(31) < tQuantile975(30) && tQuantile975(31) > 1.96);
  assert.throws(() => tQuantile975(0), /df/);
});

test('a mean with its 95% interval', () => {
  const x = meanInterval([0.5, 0.6, 0.7, 0.4, 0.8]);
  assertClose(x.mean, 0.6, { atol: 1e-12 }, 'mean');
  // sd = 0.158114, n = 5: 2.776 · 0.158114 / √5
  assertClose(x.half, 2.776 * 0.15811388 / Math.sqrt(5), { atol: 1e-7 }, 'half-width');
  assert.ok(Number.isNaN(meanInterval([0.3]).half), 'one seed: no interval');
  assert.ok(Number.isNaN(meanInterval([]).mean));
});

function run(loss: string, seed: number, finalAccuracy: number, extra: Partial<CompareRun> = {}): CompareRun {
  return { loss, seed, dir: `${loss}-${seed}`, startAccuracy: 0.5, finalAccuracy, bestAccuracy: finalAccuracy + 0.01, meanLength: 10, lambda: loss === 'lambda' ? -0.2 : null, ...extra };
}

test('differences to the baseline are paired by seed', () => {
  // Seeds differ a lot, the losses by a steady +0.02: unpaired, the interval would dwarf it.
  const base = [0.4, 0.7, 0.5, 0.9];
  const runs = [
    ...base.map((a, s) => run('grpo', s, a)),
    ...base.map((a, s) => run('lambda', s, a + 0.02 + (s % 2 ? 0.001 : -0.001), { lambda: -0.1 * s })),
  ];
  const rows = summariseComparison(runs, ['lambda', 'grpo']);
  assert.deepEqual(rows.map((r) => r.loss), ['lambda', 'grpo']);
  const lambda = rows[0];
  assertClose(lambda.finalVsBaseline!.mean, 0.02, { atol: 1e-12 }, 'paired mean difference');
  assert.ok(lambda.finalVsBaseline!.half < 0.003, `paired half-width ${lambda.finalVsBaseline!.half}`);
  assert.ok(lambda.final.half > 0.2, 'the per-loss interval carries the seed-to-seed spread');
  assertClose(lambda.lambdaInterval!.mean, -0.15, { atol: 1e-12 }, 'mean final λ');
  assert.equal(rows[1].finalVsBaseline, null, 'the baseline has no difference to itself');
  assert.equal(rows[1].lambdaInterval, null);
  // A seed the baseline lacks takes no part in the difference.
  const partial = summariseComparison([...runs, run('lambda', 9, 0.1)], ['lambda', 'grpo']);
  assert.equal(partial[0].finalVsBaseline!.n, 4);
  assert.equal(partial[0].final.n, 5);
  // Without the baseline there are no differences.
  assert.equal(summariseComparison(runs, ['lambda'])[0].finalVsBaseline, null);

  const table = formatCompareTable(rows).split('\n');
  assert.match(table[0], /^loss +seeds +step-0 acc +final acc +final − grpo +best acc +best − grpo +mean length +final λ$/);
  assert.match(table[2], /^lambda +4 +0\.500 ± 0\.000 +0\.645 ± 0\.\d{3} +\+0\.020 ± 0\.00\d +0\.655 ± 0\.\d{3} +\+0\.020 ± 0\.00\d +10\.0 ± 0\.0 +-0\.150 ± 0\.\d{3}$/);
  assert.match(table[3], /^grpo +4 .* — .* — +10\.0 ± 0\.0 +—$/);
});

test('mean curves: each step\'s fields averaged over the seeds that have it', () => {
  const a = { name: 'a', records: [{ kind: 'warmup' as const, step: 0, loss: 3 }, { kind: 'eval' as const, step: 0, accuracy: 0.4 }, { kind: 'train' as const, step: 1, lambda: 0.2, loss: 1 }] };
  const b = { name: 'b', records: [{ kind: 'eval' as const, step: 0, accuracy: 0.6 }, { kind: 'train' as const, step: 1, lambda: 0.4, loss: null }] };
  const m = meanCurves('lambda', [a, b]);
  assert.equal(m.name, 'lambda');
  assert.deepEqual(m.records.map((r) => `${r.kind}@${r.step}`), ['eval@0', 'train@1']);
  assertClose(m.records[0].accuracy as number, 0.5, { atol: 1e-12 }, 'accuracy');
  assertClose(m.records[1].lambda as number, 0.3, { atol: 1e-12 }, 'λ');
  assert.equal(m.records[1].loss, 1, 'a missing value averages what is there');
});
