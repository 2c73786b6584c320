// The engine's causal attention (flash-style: the forward keeps only lse, the backward
// recomputes the probabilities) at the shapes it trains: the small config's 8 × 256
// tokens (8 query heads on 2 kv heads of 32) and the Qwen2.5-0.5B shape's heads (14 on 2,
// of 64) over 4 × 512 tokens. Its work is dot products over keys a query can see, so it
// is measured in GFLOP/s against the FMA ceiling measured in the same run. The naive
// TypeScript version runs batch row 0 and is scaled by the batch (rows cost the same).
import { attentionBackward, attentionForward } from '../ops/attention.js';
import { measurePeakFlops } from '../ops/gemm.js';
import { Tensor } from '../tensor.js';
import { disposeAll, fillUniform, maxAbsDiff, timeIt, type BenchContext, type BenchResult, type KernelBench } from './harness.js';
import { naiveAttention, naiveAttentionBackward } from './naive.js';

interface AttentionShape {
  name: string;
  B: number;
  T: number;
  Hq: number;
  Hkv: number;
  hd: number;
}

const SHAPES: readonly AttentionShape[] = [
  { name: 'small config', B: 8, T: 256, Hq: 8, Hkv: 2, hd: 32 },
  { name: 'Qwen2.5-0.5B heads', B: 4, T: 512, Hq: 14, Hkv: 2, hd: 64 },
];
const SHAPES_QUICK: readonly AttentionShape[] = [{ name: 'small config', B: 2, T: 64, Hq: 8, Hkv: 2, hd: 32 }];

/** Multiply-adds of QKᵀ (or of PV) over the causal triangle, × 2 flops. */
function triangleFlops(s: AttentionShape): number {
  return 2 * s.B * s.Hq * s.hd * (s.T * (s.T + 1)) / 2;
}

export const attentionBench: KernelBench = {
  name: 'attention',
  async run(ctx: BenchContext): Promise<void> {
    if (ctx.device !== 'cpu') {
      ctx.log('attention: CPU only for now, skipped on ' + ctx.device);
      return;
    }
    ctx.log('attention: measuring the FMA ceiling...');
    let peak = Math.max(measurePeakFlops(0.25), measurePeakFlops(0.25));
    const pending: BenchResult[] = [];
    for (const s of ctx.quick ? SHAPES_QUICK : SHAPES) {
      const size = `B=${s.B} T=${s.T} Hq=${s.Hq} Hkv=${s.Hkv} hd=${s.hd}`;
      const dims = { B: s.B, T: s.T, Hq: s.Hq, Hkv: s.Hkv, hd: s.hd };
      const scale = 1 / Math.sqrt(s.hd);
      const qn = s.B * s.T * s.Hq * s.hd, kn = s.B * s.T * s.Hkv * s.hd;
      const q = fillUniform(new Float32Array(qn), -1, 1, 21), k = fillUniform(new Float32Array(kn), -1, 1, 22);
      const v = fillUniform(new Float32Array(kn), -1, 1, 23), dout = fillUniform(new Float32Array(qn), -1, 1, 24);
      const Q = Tensor.from(q, [s.B, s.T, s.Hq, s.hd]), K = Tensor.from(k, [s.B, s.T, s.Hkv, s.hd]);
      const V = Tensor.from(v, [s.B, s.T, s.Hkv, s.hd]), dO = Tensor.from(dout, [s.B, s.T, s.Hq, s.hd]);
      const lengths = new Int32Array(s.B).fill(s.T);
      const naiveTiming = ctx.timing({ warmup: 0, minRuns: 1, minSeconds: 0.2 });
      // Batch row 0 of each input: the naive versions' whole input.
      const q0 = q.subarray(0, qn / s.B), k0 = k.subarray(0, kn / s.B), v0 = v.subarray(0, kn / s.B), d0 = dout.subarray(0, qn / s.B);

      ctx.log(`attention forward ${size}...`);
      const fwd = attentionForward(Q, K, V, lengths);
      const tf = timeIt(() => attentionForward(Q, K, V, lengths), ctx.timing({ warmup: 1, minRuns: 5, minSeconds: 1 }), disposeAll);
      let ref!: ReturnType<typeof naiveAttention>;  // the last timed run's output
      const nf = timeIt(() => naiveAttention(q0, k0, v0, s.T, s.Hq, s.Hkv, s.hd, scale), naiveTiming, (r) => (ref = r));
      const outData = fwd.out.data as Float32Array;
      const fwdFlops = 2 * triangleFlops(s);
      pending.push({
        kernel: 'attention', variant: 'forward', size, dims, device: 'cpu', ...tf, flops: fwdFlops,
        gflopPerS: fwdFlops / (tf.medianMs / 1000) / 1e9, ceiling: 'flop',
        naive: {
          medianMs: nf.medianMs * s.B, rowsTimed: 1, totalRows: s.B, speedup: (nf.medianMs * s.B) / tf.medianMs,
          maxAbsDiff: maxAbsDiff(outData, ref.out, ref.out.length),
        },
        notes: [`${s.name}; QKᵀ and PV over the causal triangle (2 × ${triangleFlops(s).toExponential(2)} flops)`],
      });

      ctx.log(`attention backward ${size}...`);
      const tb = timeIt(() => attentionBackward(Q, K, V, lengths, fwd.out, fwd.lse, dO), ctx.timing({ warmup: 1, minRuns: 5, minSeconds: 1 }), disposeAll);
      let refGrad!: ReturnType<typeof naiveAttentionBackward>;
      const nb = timeIt(() => naiveAttentionBackward(q0, k0, v0, d0, s.T, s.Hq, s.Hkv, s.hd, scale), naiveTiming, (r) => (refGrad = r));
      const g = attentionBackward(Q, K, V, lengths, fwd.out, fwd.lse, dO);
      const diff = Math.max(
        maxAbsDiff(g.dq.data as Float32Array, refGrad.dq, refGrad.dq.length),
        maxAbsDiff(g.dk.data as Float32Array, refGrad.dk, refGrad.dk.length),
        maxAbsDiff(g.dv.data as Float32Array, refGrad.dv, refGrad.dv.length),
      );
      disposeAll(g);
      // QKᵀ again, dO·Vᵀ, dS·K, dSᵀ·Q and Pᵀ·dO: five products of the triangle.
      const bwdFlops = 5 * triangleFlops(s);
      pending.push({
        kernel: 'attention', variant: 'backward', size, dims, device: 'cpu', ...tb, flops: bwdFlops,
        gflopPerS: bwdFlops / (tb.medianMs / 1000) / 1e9, ceiling: 'flop',
        naive: {
          medianMs: nb.medianMs * s.B, rowsTimed: 1, totalRows: s.B, speedup: (nb.medianMs * s.B) / tb.medianMs, maxAbsDiff: diff,
        },
        notes: [`${s.name}; recomputes the probabilities from lse (5 × ${triangleFlops(s).toExponential(2)} flops)`],
      });
      disposeAll(fwd);
      for (const t of [Q, K, V, dO]) t.dispose();
    }
    // The ceiling again after the shapes, the best kept (as the gemm bench does).
    peak = Math.max(peak, measurePeakFlops(0.25));
    for (const r of pending) {
      const pct = (100 * (r.gflopPerS ?? 0)) / peak;
      ctx.record({ ...r, pctOfCeiling: pct, notes: [...r.notes, `${pct.toFixed(0)}% of the measured FMA ceiling (${peak.toFixed(1)} GFLOP/s)`] });
    }
  },
};
