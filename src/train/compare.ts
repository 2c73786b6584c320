// What `compare` reports: per loss, held-out accuracy as a mean with a 95% confidence
// interval over seeds, and the difference to a baseline loss paired by seed. Pairing is
// what makes a few seeds informative: every loss of a seed starts from the same warmed-up
// weights, draws the same prompts and is evaluated on the same held-out set, so much of
// what varies from seed to seed cancels in the per-seed difference.
import type { MetricRecord } from './metrics.js';
import type { ReportRun } from './report.js';

/** One finished run of a comparison. */
export interface CompareRun {
  loss: string;
  seed: number;
  dir: string;
  /** Held-out accuracy at step 0 (after the warm-up, before RL), at the last eval, and the best eval's. */
  startAccuracy: number;
  finalAccuracy: number;
  bestAccuracy: number;
  /** Mean response length at the last eval. */
  meanLength: number;
  /** λ after the last step ('lambda' only). */
  lambda: number | null;
}

/** A mean with its 95% interval mean ± half (Student t over n − 1 degrees of freedom; half is NaN for n < 2). */
export interface Interval {
  mean: number;
  half: number;
  n: number;
}

export interface CompareRow {
  loss: string;
  seeds: number[];
  runs: string[];
  startAccuracy: number[];
  finalAccuracy: number[];
  bestAccuracy: number[];
  meanLength: number[];
  lambda: number[] | null;
  final: Interval;
  best: Interval;
  length: Interval;
  lambdaInterval: Interval | null;
  /** This loss minus the baseline, seed by seed (null for the baseline itself or without it). */
  finalVsBaseline: Interval | null;
  bestVsBaseline: Interval | null;
}

// Two-sided 95% quantiles of Student's t, t_{0.975, df}, df = 1…30 (standard tables).
const T975 = [
  12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131,
  2.12, 2.11, 2.101, 2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048, 2.045, 2.042,
];

/** t_{0.975, df}: the table to 30, then the Cornish–Fisher expansion around z (error < 1e-3). */
export function tQuantile975(df: number): number {
  if (!Number.isInteger(df) || df < 1) throw new RangeError(`df: expected an integer >= 1, got ${df}`);
  if (df <= T975.length) return T975[df - 1];
  const z = 1.959964;
  return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df * df);
}

export function meanInterval(values: readonly number[]): Interval {
  const n = values.length;
  if (n === 0) return { mean: NaN, half: NaN, n };
  const mean = values.reduce((a, b) => a + b, 0) / n;
  if (n < 2) return { mean, half: NaN, n };
  const variance = values.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1);
  return { mean, half: tQuantile975(n - 1) * Math.sqrt(variance / n), n };
}

/** The difference a − b over the seeds both have. */
function paired(aSeeds: number[], a: number[], bSeeds: number[], b: number[]): Interval {
  const diffs: number[] = [];
  aSeeds.forEach((seed, i) => {
    const j = bSeeds.indexOf(seed);
    if (j >= 0) diffs.push(a[i] - b[j]);
  });
  return meanInterval(diffs);
}

/** Per loss (in the order given), the statistics over its seeds; differences to `baseline` when it was run. */
export function summariseComparison(runs: readonly CompareRun[], losses: readonly string[], baseline = 'grpo'): CompareRow[] {
  const rows = losses.map((loss): CompareRow => {
    const mine = runs.filter((r) => r.loss === loss);
    const lambda = loss === 'lambda' ? mine.map((r) => r.lambda ?? NaN) : null;
    return {
      loss,
      seeds: mine.map((r) => r.seed),
      runs: mine.map((r) => r.dir),
      startAccuracy: mine.map((r) => r.startAccuracy),
      finalAccuracy: mine.map((r) => r.finalAccuracy),
      bestAccuracy: mine.map((r) => r.bestAccuracy),
      meanLength: mine.map((r) => r.meanLength),
      lambda,
      final: meanInterval(mine.map((r) => r.finalAccuracy)),
      best: meanInterval(mine.map((r) => r.bestAccuracy)),
      length: meanInterval(mine.map((r) => r.meanLength)),
      lambdaInterval: lambda === null ? null : meanInterval(lambda),
      finalVsBaseline: null,
      bestVsBaseline: null,
    };
  });
  const base = rows.find((r) => r.loss === baseline);
  if (base)
    for (const row of rows) {
      if (row === base) continue;
      row.finalVsBaseline = paired(row.seeds, row.finalAccuracy, base.seeds, base.finalAccuracy);
      row.bestVsBaseline = paired(row.seeds, row.bestAccuracy, base.seeds, base.bestAccuracy);
    }
  return rows;
}

function fmt(x: Interval | null, digits: number, signed = false): string {
  if (x === null || x.n === 0) return '—';
  const m = `${signed && x.mean >= 0 ? '+' : ''}${x.mean.toFixed(digits)}`;
  return Number.isFinite(x.half) ? `${m} ± ${x.half.toFixed(digits)}` : m;
}

/** The cells of the comparison table: what `compare` prints and the report page shows. */
export function compareTableCells(rows: readonly CompareRow[], baseline = 'grpo'): { header: string[]; rows: string[][] } {
  return {
    header: ['loss', 'seeds', 'step-0 acc', 'final acc', `final − ${baseline}`, 'best acc', `best − ${baseline}`, 'mean length', 'final λ'],
    rows: rows.map((r) => [
      r.loss, String(r.seeds.length), fmt(meanInterval(r.startAccuracy), 3), fmt(r.final, 3), fmt(r.finalVsBaseline, 3, true),
      fmt(r.best, 3), fmt(r.bestVsBaseline, 3, true), fmt(r.length, 1), fmt(r.lambdaInterval, 3),
    ]),
  };
}

/** The table as plain text, columns padded. */
export function formatCompareTable(rows: readonly CompareRow[], baseline = 'grpo'): string {
  const { header, rows: body } = compareTableCells(rows, baseline);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}

/**
 * One curve per loss: every numeric field of the train and eval lines averaged over the
 * seeds at each step (steps some seed lacks average what is there). Warm-up lines are left
 * out: they are the same for every loss.
 */
export function meanCurves(name: string, runs: readonly ReportRun[]): ReportRun {
  const sums = new Map<string, { kind: string; step: number; fields: Map<string, { sum: number; n: number }> }>();
  for (const run of runs)
    for (const r of run.records) {
      if (r.kind !== 'train' && r.kind !== 'eval') continue;
      const key = `${r.kind}@${r.step}`;
      let entry = sums.get(key);
      if (!entry) sums.set(key, (entry = { kind: r.kind, step: r.step, fields: new Map() }));
      for (const [k, v] of Object.entries(r)) {
        if (k === 'kind' || k === 'step' || typeof v !== 'number' || !Number.isFinite(v)) continue;
        const f = entry.fields.get(k) ?? { sum: 0, n: 0 };
        f.sum += v;
        f.n++;
        entry.fields.set(k, f);
      }
    }
  const records: MetricRecord[] = [...sums.values()]
    .sort((a, b) => a.step - b.step || (a.kind === 'eval' ? 1 : 0) - (b.kind === 'eval' ? 1 : 0))
    .map((e) => {
      const rec: MetricRecord = { kind: e.kind as MetricRecord['kind'], step: e.step };
      for (const [k, f] of e.fields) rec[k] = f.sum / f.n;
      return rec;
    });
  return { name, records, config: runs[0]?.config ?? null };
}
