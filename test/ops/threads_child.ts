// Fixed-seed cases for the thread-count determinism tests of gemm and the optimiser
// leaves. The tests run them in this process and in child processes started with
// LGRPO_NUM_THREADS=1 and =3 (the pool size is fixed at start-up that way), and compare
// SHA-256 digests of the output bits. Run directly, it prints the digests as JSON.
import { createHash } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { adamwStep, gradSumSquares } from '../../src/ops/adamw.js';
import { attentionBackward, attentionForward } from '../../src/ops/attention.js';
import { gemm, gemmBf16Weights } from '../../src/ops/gemm.js';
import { linearTokenLogprobs, linearTokenLogprobsBackward } from '../../src/ops/linear_token_logprobs.js';
import { fromFloat32Array } from '../../src/dtype.js';
import { Tensor } from '../../src/tensor.js';
import { buildInfo, grpoLoss } from '../../src/index.js';
import { Rng } from '../helpers.js';

function digest(...arrays: (Float32Array | Float64Array)[]): string {
  const h = createHash('sha256');
  for (const a of arrays) h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  return h.digest('hex');
}

function gemmCase(transA: boolean, transB: boolean): string {
  const r = new Rng(1234 + (transA ? 2 : 0) + (transB ? 1 : 0));
  // Big enough to be split across threads, several K/M blocks, ragged edges everywhere.
  const m = 301, n = 283, k = 611;
  const a = r.normals(m * k), b = r.normals(k * n), c = r.normals(m * n);
  gemm({ data: a, rows: transA ? k : m, cols: transA ? m : k }, { data: b, rows: transB ? n : k, cols: transB ? k : n },
    { data: c, rows: m, cols: n }, { transA, transB, alpha: 0.7, beta: 1 });
  return digest(c);
}

// Few rows against a transposed B (the decode shape: the streaming small-M path), on
// either side of the 6 rows where the AVX-512 path switches to its 12-row tile.
function gemmFewRowsCase(m: number): string {
  const r = new Rng(4321 + m);
  const n = 197, k = 530;
  const a = r.normals(m * k), b = r.normals(n * k), c = r.normals(m * n);
  gemm({ data: a, rows: m, cols: k }, { data: b, rows: n, cols: k }, { data: c, rows: m, cols: n }, { transB: true, alpha: 1, beta: 0 });
  return digest(c);
}

// bf16 weights (the rollout GEMM): K with a tail past its 32-blocks, rows on either side
// of the AVX-512 path's group of four.
function gemmBf16Case(): string {
  const r = new Rng(777);
  const m = 7, n = 301, k = 333;
  const x = r.normals(m * k), w = fromFloat32Array(r.normals(n * k), 'bf16');
  const y = Tensor.from(new Float32Array(m * n), [m, n]);
  gemmBf16Weights(Tensor.from(x, [m, k]), Tensor.from(w, [n, k], 'bf16'), y);
  return digest(y.data as Float32Array);
}

// The λ-GRPO token pass with a reference, dual clip and ragged rows whose lengths end
// inside and past 16-token steps (T = 203: the AVX-512 pass ends on a half step).
function grpoCase(maskF32: boolean): string {
  const r = new Rng(2024 + (maskF32 ? 1 : 0));
  const B = 12, T = 203;
  const mask = new Uint8Array(B * T);
  for (let i = 0; i < B; i++) mask.fill(1, i * T, i * T + [0, 1, 7, 8, 9, 15, 16, 17, 100, 192, 200, 203][i]);
  const lp = Float32Array.from(r.normals(B * T), (x) => -1 + 0.5 * x);
  const old = Float32Array.from(lp, (x, k) => x + 0.3 * Math.sin(k));
  const ref = Float32Array.from(lp, (x, k) => x - 0.2 * Math.cos(k));
  const out = grpoLoss({
    logprobs: Tensor.from(lp, [B, T]), oldLogprobs: Tensor.from(old, [B, T]), refLogprobs: Tensor.from(ref, [B, T]),
    advantages: Float32Array.from(r.normals(B)),
    mask: maskF32 ? Tensor.from(Float32Array.from(mask), [B, T]) : Tensor.from(mask, [B, T]), groupIds: Int32Array.from({ length: B }, (_, i) => i % 3), groups: 3,
    aggregation: 'lambda', lambda: 0.5, beta: 0.04, dualClip: 3,
  });
  const scalars = Float64Array.from([out.loss as number, out.gradLambda as number, ...Object.values(out.stats as unknown as Record<string, number>).filter((v) => typeof v === 'number')]);
  const grad = out.gradLogprobs instanceof Tensor ? out.gradLogprobs.data as Float32Array : out.gradLogprobs as Float32Array;
  return digest(grad, scalars);
}

function adamwCase(): string {
  const r = new Rng(99);
  const n = 300_001, p = r.normals(n), g = r.normals(n), m = r.normals(n), v = Float32Array.from(r.normals(n), (x) => x * x);
  adamwStep(p, g, m, v, { lr: 1e-3, step: 5, weightDecay: 0.01 });
  return digest(p, m, v);
}

function sumSquaresCase(): string {
  return digest(new Float64Array([gradSumSquares(new Rng(7).normals(1_000_003))]));
}

// The fused LM head forward and backward: V = 397 (vocabulary tiles of 192, 192 and 13: pairs
// of micro-tiles on the AVX-512 path and single ones), d = 70 (a column tile cut short), 301
// rows. Its gradHidden sums one partial per thread, so it is compared across SIMD paths at
// one thread count only.
function lmHeadCase(): string {
  const r = new Rng(2468);
  const n = 301, d = 70, v = 397;
  const hidden = Tensor.from(r.normals(n * d), [n, d]), weight = Tensor.from(Float32Array.from(r.normals(v * d), (x) => 0.2 * x), [v, d]);
  const targets = Tensor.from(Int32Array.from({ length: n }, (_, i) => (i * 131) % v), [n]);
  const fwd = linearTokenLogprobs(hidden, weight, targets);
  const grads = linearTokenLogprobsBackward(hidden, weight, targets, fwd.lse, Tensor.from(r.normals(n), [n]));
  return digest(...[fwd.logprobs, fwd.lse, grads.gradHidden, grads.gradWeight].map((t) => t.data as Float32Array));
}

// Attention forward + backward at head sizes whose key gradients take 16-float slices four,
// three, two and one at a time on the AVX-512 path (two keys per step there, one with AVX2),
// and one (20) whose scores end in a tail of four after the 8-float steps; 37 keys take
// eight at a time on the AVX-512 path, then four.
function attentionCase(): string {
  const r = new Rng(1357);
  const out: Float32Array[] = [];
  for (const [Hq, Hkv, hd] of [[4, 2, 64], [6, 2, 48], [8, 2, 32], [2, 1, 16], [3, 1, 80], [5, 1, 20]]) {
    const B = 2, T = 37;
    const q = Tensor.from(r.normals(B * T * Hq * hd), [B, T, Hq, hd]);
    const k = Tensor.from(r.normals(B * T * Hkv * hd), [B, T, Hkv, hd]), v = Tensor.from(r.normals(B * T * Hkv * hd), [B, T, Hkv, hd]);
    const lengths = Int32Array.from([37, 22]);
    const f = attentionForward(q, k, v, lengths);
    const g = attentionBackward(q, k, v, lengths, f.out, f.lse, Tensor.from(r.normals(B * T * Hq * hd), [B, T, Hq, hd]));
    out.push(...[f.out, f.lse, g.dq, g.dk, g.dv].map((t) => t.data as Float32Array));
  }
  return digest(...out);
}

export function simdCases(): Record<string, string> {
  return { 'linearTokenLogprobs forward + backward': lmHeadCase(), 'attention forward + backward': attentionCase() };
}

export function threadCases(): Record<string, string> {
  return {
    'gemm NN': gemmCase(false, false), 'gemm NT': gemmCase(false, true),
    'gemm TN': gemmCase(true, false), 'gemm TT': gemmCase(true, true),
    'gemm bf16 weights': gemmBf16Case(),
    'grpoLoss u8 mask': grpoCase(false), 'grpoLoss f32 mask': grpoCase(true),
    'gemm NT m=1': gemmFewRowsCase(1), 'gemm NT m=7': gemmFewRowsCase(7), 'gemm NT m=16': gemmFewRowsCase(16),
    adamw: adamwCase(), gradSumSquares: sumSquaresCase(),
  };
}

if (process.argv[1] && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url)))
  console.log(JSON.stringify({ simd: buildInfo().simd, cases: threadCases(), simdCases: simdCases() }));
