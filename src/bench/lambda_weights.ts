// lambdaWeights at B = 64 prompts × 16 responses: a few microseconds of work, so
// the public call (validation, native crossing, outputs) is what is timed.
import { lambdaWeights } from '../index.js';
import type { Tensor } from '../tensor.js';
import { disposeAll, hostData, maxAbsDiff, place, randomInts, timeIt, type BenchContext, type KernelBench } from './harness.js';
import { naiveLambdaWeights } from './naive.js';

export const lambdaWeightsBench: KernelBench = {
  name: 'lambdaWeights',
  async run(ctx: BenchContext): Promise<void> {
    const P = 64, G = 16, B = P * G, lambda = 0.5;
    const lengths = Float32Array.from(randomInts(B, 1025, 41));
    const ids = Int32Array.from({ length: B }, (_, i) => Math.floor(i / G));
    const l = place(lengths, undefined, ctx.device), g = place(ids, undefined, ctx.device);
    ctx.log(`lambdaWeights: B=${B} (${P} groups of ${G}), λ=${lambda}`);
    try {
      const call = () => lambdaWeights(l, g, { lambda, groups: P });
      const t = timeIt(call, ctx.timing({ warmup: 10, minRuns: 20 }), disposeAll);
      const naiveT = timeIt(() => naiveLambdaWeights(lengths, ids, lambda), ctx.timing({ warmup: 10, minRuns: 20 }));
      const naive = naiveLambdaWeights(lengths, ids, lambda);
      const out = call();
      const diff = Math.max(
        maxAbsDiff(hostData(out.weights as Tensor), naive.weights),
        maxAbsDiff(hostData(out.dWeightsDLambda as Tensor), naive.dWeightsDLambda),
      );
      disposeAll(out);
      ctx.record({
        kernel: 'lambdaWeights', variant: `λ=${lambda}`, size: `B=${B} (${P}×${G})`, dims: { B, groups: P },
        device: ctx.device, ...t,
        naive: { medianMs: naiveT.medianMs, rowsTimed: B, totalRows: B, speedup: naiveT.medianMs / t.medianMs, maxAbsDiff: diff },
        notes: [],
      });
    } finally {
      l.dispose(); g.dispose();
    }
  },
};
