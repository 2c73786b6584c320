// GEMM throughput against this machine's own FLOP ceiling, both measured in this process:
// the ceiling by measurePeakFlops (native register-only FMA chains on every kernel thread),
// so "fraction of peak" compares like with like on whatever host runs it.
//
// Shapes: square 2048³ in the three layouts a linear layer uses, and the linear layers of a
// 0.5B-class transformer (hidden 896, MLP 4864) at 4096 tokens: forward y = x·Wᵀ, input
// grad dX = dY·W, weight grad dW += dYᵀ·X; plus one decode step (8 rows), which is a read
// of W and so bandwidth-bound, not FLOP-bound.
import { gemm, measurePeakFlops } from '../ops/gemm.js';
import { fillUniform, maxAbsDiff, timeIt, type BenchContext, type KernelBench, type NaiveComparison, type TimingOptions } from './harness.js';
import { naiveGemm } from './naive.js';

export interface GemmShape {
  name: string;
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  beta?: number;
}

export interface GemmBenchOptions {
  /** small shapes, short timings */
  quick?: boolean;
  /** replaces the default shapes */
  shapes?: readonly GemmShape[];
  timing?: TimingOptions;
  /** a ceiling measured elsewhere in GFLOP/s; by default measured here */
  peakGflops?: number;
  log?: (message: string) => void;
}

export interface GemmBenchRow {
  name: string;
  /** 'M×N×K op' */
  shape: string;
  medianMs: number;
  minMs: number;
  runs: number;
  gflops: number;
  /** the naive TypeScript triple loop on the first rows, its time scaled to all rows */
  naive: NaiveComparison;
  /** gflops / peakGflops */
  fractionOfPeak: number;
  peakGflops: number;
}

const T = true, F = false;

export const GEMM_SHAPES: readonly GemmShape[] = [
  { name: 'square NT', m: 2048, n: 2048, k: 2048, transA: F, transB: T },
  { name: 'square NN', m: 2048, n: 2048, k: 2048, transA: F, transB: F },
  { name: 'square TN', m: 2048, n: 2048, k: 2048, transA: T, transB: F },
  { name: 'mlp up forward y=x·Wᵀ', m: 4096, n: 4864, k: 896, transA: F, transB: T },
  { name: 'mlp up input grad dX=dY·W', m: 4096, n: 896, k: 4864, transA: F, transB: F },
  { name: 'mlp up weight grad dW+=dYᵀ·X', m: 4864, n: 896, k: 4096, transA: T, transB: F, beta: 1 },
  { name: 'decode step y=x·Wᵀ', m: 8, n: 4864, k: 896, transA: F, transB: T },
];

export const GEMM_SHAPES_QUICK: readonly GemmShape[] = [
  { name: 'square NT', m: 512, n: 512, k: 512, transA: F, transB: T },
  { name: 'square NN', m: 512, n: 512, k: 512, transA: F, transB: F },
  { name: 'square TN', m: 512, n: 512, k: 512, transA: T, transB: F },
  { name: 'decode step y=x·Wᵀ', m: 8, n: 4864, k: 896, transA: F, transB: T },
];

function opName(s: GemmShape): string {
  return `${s.transA ? 'T' : 'N'}${s.transB ? 'T' : 'N'}`;
}

/** Times gemm on each shape; returns one row per shape. */
export function benchGemm(opts: GemmBenchOptions = {}): GemmBenchRow[] {
  const log = opts.log ?? (() => {});
  const shapes = opts.shapes ?? (opts.quick ? GEMM_SHAPES_QUICK : GEMM_SHAPES);
  const timing = opts.timing ?? (opts.quick ? { warmup: 1, minRuns: 3, minSeconds: 0.2 } : { warmup: 1, minRuns: 5, minSeconds: 1 });
  // Measured before and after the shapes and the best kept: a busy neighbour during one
  // measurement would otherwise lower the ceiling and flatter every fraction.
  const measure = (): number => {
    if (opts.peakGflops !== undefined) return opts.peakGflops;
    log('gemm: measuring the FMA ceiling...');
    const p = Math.max(measurePeakFlops(0.25), measurePeakFlops(0.25));
    log(`gemm: ceiling ${p.toFixed(1)} GFLOP/s`);
    return p;
  };
  const peakBefore = measure();
  const rows: Omit<GemmBenchRow, 'fractionOfPeak' | 'peakGflops'>[] = [];
  for (const s of shapes) {
    const shape = `${s.m}×${s.n}×${s.k} ${opName(s)}`;
    log(`gemm: ${s.name} ${shape}`);
    const a = fillUniform(new Float32Array(s.m * s.k), -1, 1, 11);
    const b = fillUniform(new Float32Array(s.k * s.n), -1, 1, 12);
    const c = new Float32Array(s.m * s.n);
    const A = { data: a, rows: s.transA ? s.k : s.m, cols: s.transA ? s.m : s.k };
    const B = { data: b, rows: s.transB ? s.n : s.k, cols: s.transB ? s.k : s.n };
    const C = { data: c, rows: s.m, cols: s.n };
    const t = timeIt(() => gemm(A, B, C, { transA: s.transA, transB: s.transB, beta: s.beta ?? 0 }), timing);
    const gflops = (2 * s.m * s.n * s.k) / (t.medianMs / 1000) / 1e9;
    const naiveRows = Math.min(s.m, opts.quick ? 4 : 8);
    const naiveT = timeIt(() => naiveGemm(a, b, s.m, s.n, s.k, s.transA, s.transB, naiveRows), { warmup: 1, minRuns: 2, minSeconds: 0.2 });
    const naiveMs = (naiveT.medianMs * s.m) / naiveRows;
    // Timing with beta = 1 accumulated into C run after run: compare one product from C = 0.
    c.fill(0);
    gemm(A, B, C, { transA: s.transA, transB: s.transB, beta: s.beta ?? 0 });
    const diff = maxAbsDiff(c.subarray(0, naiveRows * s.n), naiveGemm(a, b, s.m, s.n, s.k, s.transA, s.transB, naiveRows));
    const naive = { medianMs: naiveMs, rowsTimed: naiveRows, totalRows: s.m, speedup: naiveMs / t.medianMs, maxAbsDiff: diff };
    rows.push({ name: s.name, shape, ...t, gflops, naive });
  }
  const peak = Math.max(peakBefore, measure());
  return rows.map((r) => ({ ...r, fractionOfPeak: r.gflops / peak, peakGflops: peak }));
}

/** The same, as an entry of the `lgrpo-native bench` kernel list. */
export const gemmBench: KernelBench = {
  name: 'gemm',
  async run(ctx: BenchContext): Promise<void> {
    if (ctx.device !== 'cpu') {
      ctx.log('gemm: CPU only for now, skipped on ' + ctx.device);
      return;
    }
    const rows = benchGemm({ quick: ctx.quick, timing: ctx.timing(), log: ctx.log });
    for (const r of rows) {
      const [m, n, k] = r.shape.split(' ')[0].split('×').map(Number);
      ctx.record({
        kernel: 'gemm', variant: r.name, size: r.shape, dims: { M: m, N: n, K: k }, device: 'cpu',
        medianMs: r.medianMs, minMs: r.minMs, runs: r.runs, flops: 2 * m * n * k, gflopPerS: r.gflops,
        ceiling: 'flop', pctOfCeiling: 100 * r.fractionOfPeak, naive: r.naive,
        notes: [`${(100 * r.fractionOfPeak).toFixed(0)}% of the measured FMA ceiling (${r.peakGflops.toFixed(1)} GFLOP/s, register-only FMA chains on every kernel thread)`],
      });
    }
  },
};
