// linearTokenLogprobs at Qwen2.5-0.5B's head: N = 4096 rows, V = 151936, d = 896.
// It is a GEMM (2·N·V·d FLOP forward) folded into the log-softmax, so it reports
// GFLOP/s; its point is memory, so it also reports how far the process's resident set
// rose during the call, against the 2.49 GB that N×V f32 logits would take.
// At full size one call takes tens of seconds on two cores: it runs once, unrepeated.
import { linearTokenLogprobs, linearTokenLogprobsBackward } from '../index.js';
import { Tensor } from '../tensor.js';
import {
  disposeAll, fillUniform, formatBytes, hostData, maxAbsDiff, peakRssGrowth, place, randomInts, timeIt, timeOnce,
  type BenchContext, type KernelBench, type Timing,
} from './harness.js';
import { naiveLinearTokenLogprobs, naiveLinearTokenLogprobsBackward } from './naive.js';

export const linearTokenLogprobsBench: KernelBench = {
  name: 'linearTokenLogprobs',
  async run(ctx: BenchContext): Promise<void> {
    const N = ctx.quick ? 64 : 4096;
    const V = ctx.quick ? 4096 : 151936;
    const d = ctx.quick ? 128 : 896;
    // The backward does three GEMMs' worth of work; at full N it would take minutes.
    const Nb = ctx.quick ? N : 1024;
    const R = ctx.quick ? 8 : 2;     // rows the naive forward runs on
    const Rb = ctx.quick ? 4 : 1;    // rows the naive backward runs on
    const logitsBytes = N * V * 4;

    ctx.log(`linearTokenLogprobs: filling hidden [${N}, ${d}] and weight [${V}, ${d}] (${formatBytes(V * d * 4)}) f32...`);
    // Activations of unit scale and a head of scale ~1/√d give logits of order one.
    const hidden = fillUniform(new Float32Array(N * d), -1.7, 1.7, 21);
    const weightHost = Tensor.zeros([V, d], 'f32');
    const bound = 1.7 / Math.sqrt(d);
    fillUniform(weightHost.data as Float32Array, -bound, bound, 23);
    const weightData = weightHost.data as Float32Array;
    const weight = ctx.device === 'cpu' ? weightHost : weightHost.to(ctx.device);
    const targets = randomInts(N, V, 25);
    const h = place(hidden, [N, d], ctx.device);
    const tg = place(targets, undefined, ctx.device);
    const onCpu = ctx.device === 'cpu';

    try {
      // Forward. The first call is the measured one for memory (and, at full size, for time).
      ctx.log(`linearTokenLogprobs forward f32 [N=${N} V=${V} d=${d}]${ctx.quick ? '' : ': one call, tens of seconds'}...`);
      const first = peakRssGrowth(() => timeOnce(() => linearTokenLogprobs(h, weight, tg)));
      let timing: Timing = first.result.timing;
      const lse = hostData(first.result.result.lse as Tensor) as Float32Array;
      const logprobs = hostData(first.result.result.logprobs as Tensor);
      disposeAll(first.result.result);
      if (ctx.quick) timing = timeIt(() => linearTokenLogprobs(h, weight, tg), ctx.timing(), disposeAll);
      const { timing: naiveT, result: naive } = naiveRun(ctx, () => naiveLinearTokenLogprobs(hidden, weightData, R, d, V, targets));
      const flops = 2 * N * V * d;
      const naiveMs = (naiveT.medianMs * N) / R;
      ctx.record({
        kernel: 'linearTokenLogprobs', variant: 'forward f32', size: `N=${N} V=${V} d=${d}`, dims: { N, V, d }, device: ctx.device,
        ...timing, flops, gflopPerS: flops / (timing.medianMs / 1000) / 1e9,
        naive: { medianMs: naiveMs, rowsTimed: R, totalRows: N, speedup: naiveMs / timing.medianMs, maxAbsDiff: maxAbsDiff(logprobs, naive.logprobs, R) },
        ...(onCpu ? { peakRssGrowth: { ...first.growth, logitsBytes } } : {}),
        notes: [
          `GFLOP/s counts 2·N·V·d${ctx.quick ? '' : '; one unrepeated call'}`,
          ...(onCpu ? [] : ['peak memory not reported: RSS does not see device memory']),
        ],
      });

      // Backward on the first Nb rows, with the forward's lse for them.
      ctx.log(`linearTokenLogprobs backward f32 [N=${Nb} V=${V} d=${d}]${ctx.quick ? '' : ': one call, tens of seconds'}...`);
      const gradLp = fillUniform(new Float32Array(Nb), -1, 1, 27);
      const hb = place(hidden.subarray(0, Nb * d), [Nb, d], ctx.device);
      const tb = place(targets.subarray(0, Nb), undefined, ctx.device);
      const lb = place(lse.slice(0, Nb), undefined, ctx.device);
      const gb = place(gradLp, undefined, ctx.device);
      try {
        const bwd = peakRssGrowth(() => timeOnce(() => linearTokenLogprobsBackward(hb, weight, tb, lb, gb)));
        let bt: Timing = bwd.result.timing;
        const gradHidden = hostData(bwd.result.result.gradHidden as Tensor);
        disposeAll(bwd.result.result);
        if (ctx.quick) bt = timeIt(() => linearTokenLogprobsBackward(hb, weight, tb, lb, gb), ctx.timing(), disposeAll);
        const { timing: naiveB, result: naiveGrad } = naiveRun(ctx, () => naiveLinearTokenLogprobsBackward(hidden, weightData, Rb, d, V, targets, gradLp));
        const bflops = 6 * Nb * V * d;
        const naiveBMs = (naiveB.medianMs * Nb) / Rb;
        ctx.record({
          kernel: 'linearTokenLogprobs', variant: `backward f32${Nb < N ? ` (reduced N=${Nb})` : ''}`, size: `N=${Nb} V=${V} d=${d}`,
          dims: { N: Nb, V, d }, device: ctx.device,
          ...bt, flops: bflops, gflopPerS: bflops / (bt.medianMs / 1000) / 1e9,
          naive: { medianMs: naiveBMs, rowsTimed: Rb, totalRows: Nb, speedup: naiveBMs / bt.medianMs, maxAbsDiff: maxAbsDiff(gradHidden, naiveGrad.gradHidden, Rb * d) },
          ...(onCpu ? { peakRssGrowth: { ...bwd.growth, logitsBytes: Nb * V * 4 } } : {}),
          notes: [
            `GFLOP/s counts 6·N·V·d (logits recomputed, then ∂h and ∂W); peak RSS includes the ${formatBytes(V * d * 4)} ∂W output` +
              `${Nb < N ? `; run at N=${Nb} rather than ${N} to keep the full bench under a few minutes` : ''}`,
            'naive check compares ∂h on the naive rows only',
          ],
        });
        if (onCpu) {
          // The same backward from logits the forward kept ({saveLogits}): two GEMMs, not three.
          ctx.log(`linearTokenLogprobs backward from saved logits [N=${Nb} V=${V} d=${d}] (${formatBytes(Nb * V * 4)} kept)...`);
          const kept = linearTokenLogprobs(hb, weight, tb, { saveLogits: true });
          try {
            const measured = peakRssGrowth(() => timeOnce(() => linearTokenLogprobsBackward(hb, weight, tb, kept.lse, gb, { saved: kept.saved })));
            const saved = measured.result;
            let st: Timing = saved.timing;
            const savedGradHidden = hostData(saved.result.gradHidden as Tensor);
            const same = maxAbsDiff(savedGradHidden, gradHidden, Nb * d) === 0;
            disposeAll(saved.result);
            if (ctx.quick) st = timeIt(() => linearTokenLogprobsBackward(hb, weight, tb, kept.lse, gb, { saved: kept.saved }), ctx.timing(), disposeAll);
            const sflops = 4 * Nb * V * d;
            ctx.record({
              kernel: 'linearTokenLogprobs', variant: `backward f32 from saved logits${Nb < N ? ` (reduced N=${Nb})` : ''}`, size: `N=${Nb} V=${V} d=${d}`,
              dims: { N: Nb, V, d }, device: ctx.device,
              ...st, flops: sflops, gflopPerS: sflops / (st.medianMs / 1000) / 1e9,
              // The naive backward above computes these same gradients.
              naive: { medianMs: naiveBMs, rowsTimed: Rb, totalRows: Nb, speedup: naiveBMs / st.medianMs, maxAbsDiff: maxAbsDiff(savedGradHidden, naiveGrad.gradHidden, Rb * d) },
              // The kept logits were allocated before the call: the growth is the call's own.
              peakRssGrowth: { ...measured.growth, logitsBytes: Nb * V * 4 },
              notes: [
                `GFLOP/s counts 4·N·V·d (∂h and ∂W; the logits read from the forward's ${formatBytes(Nb * V * 4)}); ` +
                  `${(bt.medianMs / st.medianMs).toFixed(2)}× the recomputing backward above; gradHidden ${same ? 'bit for bit' : 'DIFFERS from'} the recomputing backward's`,
              ],
            });
          } finally {
            kept.saved?.dispose();
            (kept.lse as Tensor).dispose();
            (kept.logprobs as Tensor).dispose();
          }
        }
      } finally {
        hb.dispose(); tb.dispose(); lb.dispose(); gb.dispose();
      }
    } finally {
      h.dispose(); tg.dispose();
      if (weight !== weightHost) weight.dispose();
      weightHost.dispose();
    }
  },
};

// At full size one naive call takes about a second (and the backward allocates a V×d
// gradient), so it runs once; at --quick sizes it is timed like everything else.
function naiveRun<R>(ctx: BenchContext, fn: () => R): { timing: Timing; result: R } {
  if (!ctx.quick) return timeOnce(fn);
  return { timing: timeIt(fn, ctx.timing()), result: fn() };
}
