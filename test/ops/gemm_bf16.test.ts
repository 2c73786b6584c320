// gemmBf16Weights: y = x·wᵀ with bf16 weights (the GEMM of bf16 rollouts), against a
// float64 reference over the same bf16 values on awkward sizes (K around the 32-blocks,
// one row, ragged N), its fixed arithmetic (rows independent, deterministic), NaN
// propagation confined to its row, and argument errors.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor, buildInfo } from '../../src/index.js';
import { gemmBf16Weights } from '../../src/ops/gemm.js';
import { bf16ToF32, fromFloat32Array } from '../../src/dtype.js';
import { ON_GPU, rng, type Rng } from '../helpers.js';

const U = 2 ** -24;  // f32 unit roundoff

function operands(r: Rng, m: number, n: number, k: number) {
  const x = Float32Array.from({ length: m * k }, () => r.normal());
  const w = fromFloat32Array(Float32Array.from({ length: n * k }, () => r.normal()), 'bf16');
  return { x, w };
}

function run(x: Float32Array, w: Uint16Array, m: number, n: number, k: number, bf16Activations = false, weightPanels = false): Float32Array {
  const y = Tensor.from(new Float32Array(m * n).fill(NaN), [m, n]);  // overwritten, never read
  gemmBf16Weights(Tensor.from(x, [m, k]), Tensor.from(w, [n, k], 'bf16'), y, { bf16Activations, weightPanels });
  return y.data as Float32Array;
}

describe('gemmBf16Weights (bf16 weights, f32 activations)', { skip: ON_GPU ? 'the CPU twin (its CUDA twin is checked against it bit for bit in gemm_bf16_cuda.test.ts)' : false }, () => {
  it('matches the float64 product of the same bf16 values within its rounding bound', () => {
    const r = rng('gemm bf16');
    for (const [m, n, k] of [[1, 1, 1], [1, 7, 31], [2, 5, 32], [3, 9, 33], [7, 37, 64], [5, 4, 95], [16, 130, 300], [4, 3, 1000]]) {
      const { x, w } = operands(r, m, n, k);
      const y = run(x, w, m, n, k);
      // Each lane sums ≤ 2⌈K/32⌉ products with one rounding each, the 16 lanes are added
      // in 4 rounds, then K mod 32 tail FMAs: |error| ≤ (2⌈K/32⌉ + 4 + K mod 32 + 1)·u·Σ|x·w|.
      // The weights are exact (bf16 widens to f32 exactly), so nothing else enters.
      const bound = (2 * Math.ceil(k / 32) + 4 + (k % 32) + 1) * U * 1.01;
      for (let i = 0; i < m; i++)
        for (let j = 0; j < n; j++) {
          let exact = 0, abs = 0;
          for (let t = 0; t < k; t++) {
            const p = x[i * k + t] * bf16ToF32(w[j * k + t]);
            exact += p;
            abs += Math.abs(p);
          }
          const got = y[i * n + j];
          assert.ok(Math.abs(got - exact) <= bound * abs, `m=${m} n=${n} k=${k} y[${i}][${j}] = ${got}, float64 ${exact} (bound ${bound * abs})`);
        }
    }
  });

  it('is deterministic, and a row never depends on the other rows', () => {
    const r = rng('gemm bf16 rows');
    const m = 9, n = 45, k = 200;
    const { x, w } = operands(r, m, n, k);
    const all = run(x, w, m, n, k);
    assert.deepEqual(run(x, w, m, n, k), all);
    for (const i of [0, 4, 8]) {
      const alone = run(x.slice(i * k, (i + 1) * k), w, 1, n, k);
      assert.deepEqual(alone, all.slice(i * n, (i + 1) * n), `row ${i} alone differs from row ${i} of the batch`);
    }
  });

  it('propagates NaN and Infinity into their row only', () => {
    const r = rng('gemm bf16 nan');
    const m = 3, n = 6, k = 70;
    const { x, w } = operands(r, m, n, k);
    x[1 * k + 40] = NaN;
    const y = run(x, w, m, n, k);
    for (let j = 0; j < n; j++) {
      assert.ok(Number.isNaN(y[1 * n + j]), `y[1][${j}] should be NaN`);
      assert.ok(Number.isFinite(y[j]) && Number.isFinite(y[2 * n + j]), `row 0/2 column ${j} should stay finite`);
    }
    const tail = operands(r, 2, 2, 35);
    tail.x[34] = Infinity;  // in the K mod 32 tail
    const yt = run(tail.x, tail.w, 2, 2, 35);
    assert.ok(!Number.isFinite(yt[0]) && !Number.isFinite(yt[1]) && Number.isFinite(yt[2]) && Number.isFinite(yt[3]));
  });

  it('rejects bad arguments with errors naming them', () => {
    const x = Tensor.from(new Float32Array(6), [2, 3]);
    const w = Tensor.from(new Uint16Array(12), [4, 3], 'bf16');
    const y = Tensor.from(new Float32Array(8), [2, 4]);
    assert.throws(() => gemmBf16Weights(x, Tensor.from(new Float32Array(12), [4, 3]), y), { name: 'TypeError', message: /^w: / });
    assert.throws(() => gemmBf16Weights(x, Tensor.from(new Uint16Array(8), [4, 2], 'bf16'), y), { name: 'RangeError', message: /^w: expected \[N, 3\]/ });
    assert.throws(() => gemmBf16Weights(x, w, Tensor.from(new Float32Array(6), [2, 3])), { name: 'RangeError', message: /^y: expected \[2, 4\]/ });
    assert.throws(() => gemmBf16Weights(Tensor.from(new Float32Array(6), [6]), w, y), { name: 'RangeError', message: /^x: expected a rank-2/ });
    assert.throws(() => gemmBf16Weights(x, w, new Float32Array(8) as unknown as Tensor), { name: 'TypeError', message: /^y: expected a Tensor/ });
  });
});

// The AVX512-BF16 variant bf16 rollouts run on CPUs that have it (gemm_bf16.h): its own
// arithmetic (x rounded to bf16, one vdpbf16ps chain per output), so its own bits, tested
// against float64 on its own terms. The AVX2 path above is what every other CPU runs.
const HAS_BF16_DOT = !ON_GPU && buildInfo().simd.includes('bf16');
/**
 * y (m × n) against the float64 product of bf16(x), rounded to nearest even as f32_to_bf16,
 * and w: one chain of ⌈K/2⌉ steps, two rounded additions each (the bf16 products are exact in
 * f32), every partial sum ≤ Σ|x̃·w|, so |error| ≤ (K + 1)·u·Σ|x̃·w|. Against the f32 x instead
 * the error would be ~2^-9 relative: the reference must round x the same way.
 */
function assertBf16DotProduct(x: Float32Array, w: Uint16Array, y: Float32Array, m: number, n: number, k: number) {
  const xr = fromFloat32Array(x, 'bf16');
  const bound = (k + 1) * U * 1.01;
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let exact = 0, abs = 0;
      for (let t = 0; t < k; t++) {
        const p = bf16ToF32(xr[i * k + t]) * bf16ToF32(w[j * k + t]);
        exact += p;
        abs += Math.abs(p);
      }
      const got = y[i * n + j];
      assert.ok(Math.abs(got - exact) <= bound * abs, `m=${m} n=${n} k=${k} y[${i}][${j}] = ${got}, float64 ${exact} (bound ${bound * abs})`);
    }
}

describe('gemmBf16Weights with bf16 activations (AVX512-BF16 dot products)', { skip: HAS_BF16_DOT ? false : `needs the AVX512-BF16 path (simd is '${buildInfo().simd}'${ON_GPU ? ', device run' : ''})` }, () => {
  it('matches the float64 product of bf16(x) and w within the chain\'s rounding bound', () => {
    const r = rng('gemm bf16 dot');
    for (const [m, n, k] of [[1, 1, 1], [1, 7, 31], [2, 5, 32], [3, 13, 33], [8, 37, 64], [17, 4, 95], [16, 130, 300], [33, 25, 1001], [4, 3, 1000]]) {
      const { x, w } = operands(r, m, n, k);
      assertBf16DotProduct(x, w, run(x, w, m, n, k, true), m, n, k);
    }
  });

  it('rounds x to nearest even at exact ties, as f32_to_bf16 does (the 16- and 8-float conversions, and the tail)', () => {
    const r = rng('gemm bf16 dot ties');
    for (const [m, n, k] of [[8, 16, 64], [3, 5, 40], [9, 17, 37]]) {
      // Every x halfway between two bf16 values: the low 16 bits are 0x8000, the kept
      // mantissa bits random (odd or even), so rounding up, or down, at ties is wrong half the time.
      const bits = Uint32Array.from({ length: m * k }, () => ((r.int(0, 2) << 31) | (r.int(100, 150) << 23) | (r.int(0, 128) << 16) | 0x8000) >>> 0);
      const x = new Float32Array(bits.buffer);
      const w = fromFloat32Array(Float32Array.from({ length: n * k }, () => r.normal()), 'bf16');
      assertBf16DotProduct(x, w, run(x, w, m, n, k, true), m, n, k);
    }
  });

  it('is deterministic, a row never depends on the other rows, and differs from f32 activations', () => {
    const r = rng('gemm bf16 dot rows');
    const m = 21, n = 45, k = 201;  // two row groups of 16, odd K
    const { x, w } = operands(r, m, n, k);
    const all = run(x, w, m, n, k, true);
    assert.deepEqual(run(x, w, m, n, k, true), all);
    for (const i of [0, 4, 16, 20]) {
      const alone = run(x.slice(i * k, (i + 1) * k), w, 1, n, k, true);
      assert.deepEqual(alone, all.slice(i * n, (i + 1) * n), `row ${i} alone differs from row ${i} of the batch`);
    }
    assert.notDeepEqual(run(x, w, m, n, k), all, 'bf16 activations gave the f32-activation bits');
  });

  it('over bf16 weight panels (what bf16 rollouts read) gives the same bits, K tails, partial panels and the pool\'s chunks included', () => {
    const r = rng('gemm bf16 dot panels');
    for (const [m, n, k] of [[1, 1, 1], [1, 7, 2], [8, 16, 3], [9, 17, 5], [3, 33, 15], [16, 31, 16], [17, 45, 17], [8, 130, 201], [33, 25, 1001],
      // over 256 KB of panels: chunks of them claimed by the pool's threads
      [8, 301, 523], [9, 2001, 520]]) {
      const { x, w } = operands(r, m, n, k);
      if (m * k > 3) x[m * k - 2] = NaN;   // confined to the last row in both
      const dot = run(x, w, m, n, k, true), panels = run(x, w, m, n, k, true, true);
      for (let i = 0; i < m * n; i++)
        if (!Object.is(panels[i], dot[i]))
          assert.fail(`m=${m} n=${n} k=${k}: y[${Math.floor(i / n)}][${i % n}] = ${panels[i]} over panels, ${dot[i]} from the rows`);
    }
    const x = Tensor.from(new Float32Array(4), [1, 4]), w = Tensor.from(new Uint16Array(8), [2, 4], 'bf16');
    assert.throws(() => gemmBf16Weights(x, w, Tensor.from(new Float32Array(2), [1, 2]), { weightPanels: true }), { name: 'RangeError', message: /^weightPanels: / });
  });

  it('propagates NaN and Infinity into their row only, the last odd k included', () => {
    const r = rng('gemm bf16 dot nan');
    const { x, w } = operands(r, 3, 6, 71);
    x[1 * 71 + 40] = NaN;
    x[2 * 71 + 70] = Infinity;  // the odd K's last pair (w[K-1], 0)
    const y = run(x, w, 3, 6, 71, true);
    for (let j = 0; j < 6; j++) {
      assert.ok(Number.isFinite(y[j]), `y[0][${j}] should stay finite`);
      assert.ok(Number.isNaN(y[6 + j]), `y[1][${j}] should be NaN`);
      assert.ok(!Number.isFinite(y[12 + j]), `y[2][${j}] should be non-finite`);
    }
  });
});

describe('gemmBf16Weights bf16Activations off the AVX512-BF16 path', { skip: HAS_BF16_DOT || ON_GPU ? 'this CPU path has AVX512-BF16' : false }, () => {
  it('is refused with a RangeError naming bf16Activations', () => {
    const x = Tensor.from(new Float32Array(6), [2, 3]), w = Tensor.from(new Uint16Array(12), [4, 3], 'bf16');
    assert.throws(() => gemmBf16Weights(x, w, Tensor.from(new Float32Array(8), [2, 4]), { bf16Activations: true }), { name: 'RangeError', message: /^bf16Activations: / });
  });
});
