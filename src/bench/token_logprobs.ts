// tokenLogprobs at the size of a Qwen2.5 batch: N = 4096 rows, V = 151936. The
// forward reads every logit once and writes O(N), so it should run at the machine's
// read bandwidth; the in-place backward reads and writes every logit once, so its
// ceiling is the copy bandwidth. The naive TypeScript version is timed on a few rows
// and scaled per row (rows are independent and equal in cost).
import { tokenLogprobs, tokenLogprobsBackward } from '../index.js';
import { Tensor } from '../tensor.js';
import {
  disposeAll, fillUniform, fillUniformBf16, formatBytes, hostData, maxAbsDiff, place, randomInts, timeIt,
  type BenchContext, type BenchResult, type KernelBench,
} from './harness.js';
import { naiveTokenLogprobs, naiveTokenLogprobsBackward } from './naive.js';

type Dtype = 'f32' | 'bf16';

export const tokenLogprobsBench: KernelBench = {
  name: 'tokenLogprobs',
  async run(ctx: BenchContext): Promise<void> {
    await ctx.ceiling();  // before the multi-GB logits exist
    const N = ctx.quick ? 256 : 4096;
    const V = ctx.quick ? 32000 : 151936;
    const R = ctx.quick ? 16 : 64;  // rows the naive version runs on
    for (const dtype of ['f32', 'bf16'] as const) await runDtype(ctx, dtype, N, V, R);
  },
};

async function runDtype(ctx: BenchContext, dtype: Dtype, N: number, V: number, R: number): Promise<void> {
  const bytesPer = dtype === 'f32' ? 4 : 2;
  const logitsBytes = N * V * bytesPer;
  const size = `N=${N} V=${V}`;
  const dims = { N, V };
  ctx.log(`tokenLogprobs ${dtype}: filling ${formatBytes(logitsBytes)} of random logits...`);
  // Native memory, freed by dispose() rather than whenever the GC gets to it.
  const host = Tensor.zeros([N, V], dtype);
  if (dtype === 'f32') fillUniform(host.data as Float32Array, -8, 8);
  else fillUniformBf16(host.data as Uint16Array, -8, 8);
  // The first R rows, kept for the naive version and for restoring after in-place backward.
  const saved = (host.data as Float32Array | Uint16Array).slice(0, R * V);
  const targets = randomInts(N, V);
  const gradLp = fillUniform(new Float32Array(N), -1, 1, 11);
  const gradEnt = fillUniform(new Float32Array(N), -0.1, 0.1, 13);
  let logits: Tensor = host;
  if (ctx.device !== 'cpu') {
    logits = host.to(ctx.device);
    host.dispose();
  }
  const tg = place(targets, undefined, ctx.device);
  const gLp = place(gradLp, undefined, ctx.device);
  const gEnt = place(gradEnt, undefined, ctx.device);
  const record = (r: Omit<BenchResult, 'kernel' | 'size' | 'dims' | 'device'>) =>
    ctx.record({ kernel: 'tokenLogprobs', size, dims, device: ctx.device, ...r });
  const heavy = ctx.timing({ warmup: 1, minRuns: 5, minSeconds: 1 });
  const naiveTiming = ctx.timing({ warmup: 1, minRuns: 3, minSeconds: 0.5 });

  try {
    // Forward, with and without entropy.
    let kept: { lse: Tensor; entropy: Tensor } | undefined;
    for (const entropy of [false, true]) {
      const variant = `forward${entropy ? '+entropy' : ''} ${dtype}`;
      ctx.log(`tokenLogprobs ${variant}...`);
      const call = () => tokenLogprobs(logits, tg, { entropy });
      const t = timeIt(call, heavy, disposeAll);
      const naiveT = timeIt(() => naiveTokenLogprobs(saved, dtype, R, V, targets, 1, entropy), naiveTiming);
      const naive = naiveTokenLogprobs(saved, dtype, R, V, targets, 1, entropy);
      const out = call();
      let diff = maxAbsDiff(hostData(out.logprobs as Tensor, R), naive.logprobs, R);
      if (entropy) diff = Math.max(diff, maxAbsDiff(hostData(out.entropy as Tensor, R), naive.entropy!, R));
      if (entropy) kept = { lse: out.lse as Tensor, entropy: out.entropy as Tensor };
      else disposeAll(out);
      const naiveMs = (naiveT.medianMs * N) / R;
      record({
        variant, ...t, bytes: logitsBytes, ceiling: 'read',
        naive: { medianMs: naiveMs, rowsTimed: R, totalRows: N, speedup: naiveMs / t.medianMs, maxAbsDiff: diff },
        notes: entropy ? [] : ['GB/s counts the logits read once (targets and the O(N) outputs are negligible)'],
      });
    }

    // Backward in place (∂L/∂logits overwrites the logits, as a trainer would run it).
    // Each variant first restores the R checked rows, checks one call against the naive
    // gradient on them, then times further calls, which run on the previous call's
    // gradients: finite values of the same size, so the same work.
    for (const withEntropy of [false, true]) {
      const variant = `backward${withEntropy ? '+entropy' : ''} in-place ${dtype}`;
      ctx.log(`tokenLogprobs ${variant}...`);
      const options = withEntropy ? { gradEntropy: gEnt, entropy: kept!.entropy, inPlace: true } : { inPlace: true };
      const call = () => tokenLogprobsBackward(logits, tg, kept!.lse, gLp, options);
      const release = (g: unknown) => {
        if (g !== logits) disposeAll(g);
      };
      let diff = NaN;
      const notes = ['GB/s counts the logits read and the gradient written (2× logits bytes); % is of copy bandwidth'];
      if (ctx.device === 'cpu') {
        (logits.data as Float32Array | Uint16Array).set(saved);
        const g = call();
        const got = hostData(g as Tensor, R * V);
        const naive = naiveTokenLogprobsBackward(saved, dtype, R, V, targets, gradLp, withEntropy ? gradEnt : undefined);
        const gotF32 = dtype === 'f32' ? got : widenBf16(got as Uint16Array, R * V);
        diff = maxAbsDiff(gotF32, naive, R * V);
        release(g);
      } else {
        // Device rows cannot be restored in place: check a fresh copy of the first R rows.
        const firstRows = (t: Tensor) => place(hostData(t, R) as Float32Array, undefined, ctx.device);
        const probe = place(saved.slice(), [R, V], ctx.device, dtype);
        const inputs = [place(targets.slice(0, R), undefined, ctx.device), firstRows(kept!.lse), place(gradLp.slice(0, R), undefined, ctx.device)];
        const extra = withEntropy ? [place(gradEnt.slice(0, R), undefined, ctx.device), firstRows(kept!.entropy)] : [];
        const g = tokenLogprobsBackward(probe, inputs[0], inputs[1], inputs[2],
          withEntropy ? { gradEntropy: extra[0], entropy: extra[1], inPlace: true } : { inPlace: true });
        const got = hostData(g as Tensor, R * V);
        const naive = naiveTokenLogprobsBackward(saved, dtype, R, V, targets, gradLp, withEntropy ? gradEnt : undefined);
        diff = maxAbsDiff(dtype === 'f32' ? got : widenBf16(got as Uint16Array, R * V), naive, R * V);
        for (const t of [probe, ...inputs, ...extra]) t.dispose();
      }
      const t = timeIt(call, { ...heavy, warmup: 0 }, release);
      const naiveT = timeIt(
        () => naiveTokenLogprobsBackward(saved, dtype, R, V, targets, gradLp, withEntropy ? gradEnt : undefined), naiveTiming);
      const naiveMs = (naiveT.medianMs * N) / R;
      record({
        variant, ...t, bytes: 2 * logitsBytes, ceiling: 'copy',
        naive: { medianMs: naiveMs, rowsTimed: R, totalRows: N, speedup: naiveMs / t.medianMs, maxAbsDiff: diff },
        notes: withEntropy ? [] : notes,
      });
    }
    disposeAll(kept);
  } finally {
    logits.dispose();
    tg.dispose(); gLp.dispose(); gEnt.dispose();
  }
}

function widenBf16(bits: Uint16Array, count: number): Float32Array {
  const out = new Float32Array(count);
  const words = new Uint32Array(out.buffer);
  for (let i = 0; i < count; i++) words[i] = bits[i] << 16;
  return out;
}
