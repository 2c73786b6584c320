// groupAdvantages at B = 64 prompts × 16 responses. Microseconds of work: the time is
// mostly the call (validation, crossing into native, allocating outputs), which is
// what a trainer pays, so the public API is what is timed.
import { groupAdvantages } from '../ops/group_advantages.js';
import type { Tensor } from '../tensor.js';
import { fillUniform, hostData, maxAbsDiff, place, timeIt, type BenchContext, type KernelBench } from './harness.js';
import { naiveGroupAdvantages } from './naive.js';

export const groupAdvantagesBench: KernelBench = {
  name: 'groupAdvantages',
  async run(ctx: BenchContext): Promise<void> {
    const P = 64, G = 16, B = P * G;
    // Rewards in {0, 1} as from a verifier, plus a little noise so no group is degenerate.
    const rewards = fillUniform(new Float32Array(B), 0, 1, 7).map((x) => (x > 0.5 ? 1 : 0) + x * 1e-3);
    const ids = Int32Array.from({ length: B }, (_, i) => Math.floor(i / G));
    const r = place(rewards, undefined, ctx.device), g = place(ids, undefined, ctx.device);
    ctx.log(`groupAdvantages: B=${B} (${P} groups of ${G})`);
    try {
      const call = () => groupAdvantages(r, g, { mode: 'std', groups: P });
      const dispose = (o: ReturnType<typeof call>) => {
        for (const t of [o.advantages, o.groupMean, o.groupStd, o.degenerate]) (t as Tensor).dispose();
      };
      const t = timeIt(call, ctx.timing({ warmup: 10, minRuns: 20 }), dispose);
      const naiveT = timeIt(() => naiveGroupAdvantages(rewards, ids), ctx.timing({ warmup: 10, minRuns: 20 }));
      const out = call();
      const diff = maxAbsDiff(hostData(out.advantages as Tensor), naiveGroupAdvantages(rewards, ids));
      dispose(out);
      ctx.record({
        kernel: 'groupAdvantages', variant: 'std', size: `B=${B} (${P}×${G})`, dims: { B, groups: P },
        device: ctx.device, ...t,
        naive: { medianMs: naiveT.medianMs, rowsTimed: B, totalRows: B, speedup: naiveT.medianMs / t.medianMs, maxAbsDiff: diff },
        notes: [],
      });
    } finally {
      r.dispose(); g.dispose();
    }
  },
};
