// grpoLoss forward+backward (one pass) with λ aggregation, at two scales:
// - cache-resident: B×T = 64×1024, without and with the KL term. 64 K tokens of 13-17
//   bytes each, about 1 MB, which fits in cache, so the "% of read bandwidth" can pass
//   100% once the data is warm;
// - DRAM: B×T = 512×2048 with the KL term (1 M tokens, ~17 MB of inputs and gradient, far
//   past the caches), against the copy ceiling (bytes read + written) of the same run.
import { grpoLoss } from '../index.js';
import {
  disposeAll, fillUniform, hostData, maxAbsDiff, place, randomInts, timeIt,
  type BenchContext, type KernelBench,
} from './harness.js';
import { naiveGrpoLoss } from './naive.js';
import type { Tensor } from '../tensor.js';

export const grpoLossBench: KernelBench = {
  name: 'grpoLoss',
  async run(ctx: BenchContext): Promise<void> {
    await ctx.ceiling();
    await runCase(ctx, 16, 1024, [false, true], 'cache-resident');
    await runCase(ctx, 128, 2048, [true], 'DRAM');
  },
};

async function runCase(ctx: BenchContext, G: number, T: number, refs: boolean[], scale: 'cache-resident' | 'DRAM'): Promise<void> {
  {
    const P = 4, B = P * G;
    const lambda = 0.5, beta = 0.04;
    // Ragged responses (lengths 1..T, a few empty), right-padded as a trainer's batch is.
    const lengths = randomInts(B, T + 1, 31);
    lengths[5] = 0;
    const mask = new Uint8Array(B * T);
    for (let i = 0; i < B; i++) mask.fill(1, i * T, i * T + lengths[i]);
    const logprobs = fillUniform(new Float32Array(B * T), -3, 0, 33);
    const noise = fillUniform(new Float32Array(B * T), -0.15, 0.15, 35);
    const oldLogprobs = logprobs.map((x, k) => x + noise[k]);
    const refLogprobs = logprobs.map((x, k) => x - 0.5 * noise[(k * 7) % noise.length]);
    const advantages = fillUniform(new Float32Array(B), -1.5, 1.5, 37);
    const groupIds = Int32Array.from({ length: B }, (_, i) => Math.floor(i / G));

    const lp = place(logprobs, [B, T], ctx.device), old = place(oldLogprobs, [B, T], ctx.device);
    const ref = place(refLogprobs, [B, T], ctx.device), m = place(mask, [B, T], ctx.device);
    const adv = place(advantages, undefined, ctx.device), ids = place(groupIds, undefined, ctx.device);
    try {
      for (const withRef of refs) {
        const variant = `fwd+bwd lambda${withRef ? ` β=${beta} (ref)` : ' β=0'} ${scale}`;
        ctx.log(`grpoLoss ${variant} [B=${B} T=${T}]...`);
        const call = () => grpoLoss({
          logprobs: lp, oldLogprobs: old, advantages: adv, mask: m, groupIds: ids,
          aggregation: 'lambda', lambda, groups: P, ...(withRef ? { refLogprobs: ref, beta } : { beta: 0 }),
        });
        const t = timeIt(call, ctx.timing({ warmup: 5, minRuns: 20, minSeconds: 0.5 }), disposeAll);
        const naiveCall = () => naiveGrpoLoss({
          logprobs, oldLogprobs, advantages, mask, groupIds, B, T, lambda,
          beta: withRef ? beta : 0, ...(withRef ? { refLogprobs } : {}),
        });
        const naiveT = timeIt(naiveCall, ctx.timing({ warmup: 1, minRuns: 3, minSeconds: 0.5 }));
        const naive = naiveCall();
        const out = call();
        const diff = Math.max(
          maxAbsDiff(hostData(out.gradLogprobs as Tensor), naive.gradLogprobs),
          Math.abs(scalar(out.loss) - naive.loss),
          Math.abs(scalar(out.gradLambda) - naive.gradLambda),
        );
        disposeAll(out);
        const bytesPerToken = 4 * 2 + 1 + (withRef ? 4 : 0) + 4;
        const dram = scale === 'DRAM';
        ctx.record({
          kernel: 'grpoLoss', variant, size: `B=${B} T=${T}`, dims: { B, T }, device: ctx.device, ...t,
          bytes: B * T * bytesPerToken, ceiling: dram ? 'copy' : 'read',
          naive: { medianMs: naiveT.medianMs, rowsTimed: B, totalRows: B, speedup: naiveT.medianMs / t.medianMs, maxAbsDiff: diff },
          notes: dram
            ? [`DRAM-sized: ${(B * T * bytesPerToken / 1e6).toFixed(0)} MB per call, far past the caches; % is of the copy ceiling (read + written bytes) of this run`]
            : withRef ? [] : [
              'GB/s counts logprobs, old (and ref) f32 and the u8 mask read once, ∂L/∂logp written once; ' +
              'the ~1 MB working set is cache-resident, so % of DRAM read bandwidth can exceed 100%',
              'max |Δ| covers ∂L/∂logp, the loss and ∂L/∂λ',
            ],
        });
      }
    } finally {
      for (const t of [lp, old, ref, m, adv, ids]) t.dispose();
    }
  }
}

// The loss and ∂L/∂λ come back as numbers (or, on a device, possibly as 1-element tensors).
function scalar(x: unknown): number {
  if (typeof x === 'number') return x;
  if (x && typeof x === 'object' && 'shape' in x) return (hostData(x as Tensor) as Float32Array)[0];
  return NaN;
}
