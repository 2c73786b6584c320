import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import {
  Tensor, f32ToBf16, f32ToF16, fromFloat32Array, toFloat32Array, tokenLogprobs, tokenLogprobsBackward,
} from '../../src/index.js';
import { addon } from '../../src/native.js';
import {
  tokenLogprobsBackwardReference, tokenLogprobsLossReference, tokenLogprobsReference,
} from '../reference/token_logprobs.js';
import { ON_GPU, TEST_DEVICE, assertClose, onDevice, rng, values, type Rng } from '../helpers.js';

type FloatDType = 'f32' | 'bf16' | 'f16';
const DTYPES: readonly FloatDType[] = ['f32', 'bf16', 'f16'];

/**
 * Forward tolerances hold for every dtype because the reference sees the values the
 * kernel sees (the logits after rounding to bf16/f16), and the kernel accumulates in
 * fp32: what is left is fp32 summation and exp (~1e-6 relative on Σe^x) and the
 * rounding of x/τ − m. Measured on the CPU: below 1e-6·(1 + |value|); allowed 5×.
 */
const FWD = { atol: 5e-6, rtol: 5e-6 };
/** Relative rounding of a value stored in each dtype (half an ulp, doubled for safety). */
const OUTPUT_RTOL: Record<FloatDType, number> = { f32: 1.2e-7, bf16: 2 ** -8, f16: 2 ** -11 };

/** |actual − expected| ≤ bound elementwise; NaN or Inf never passes. */
function assertWithin(actual: ArrayLike<number>, expected: ArrayLike<number>, bound: ArrayLike<number>, label: string): void {
  assert.equal(actual.length, expected.length, `${label}: length`);
  for (let i = 0; i < actual.length; i++)
    if (!(Math.abs(actual[i] - expected[i]) <= bound[i]))
      assert.fail(`${label}[${i}] = ${actual[i]}, expected ${expected[i]} ± ${bound[i].toExponential(2)}`);
}

/**
 * Per-element tolerance of a gradient against the float64 reference. The kernel computes
 * p_v (g·1[v=y] − g − e (d_v + H)) / τ from d_v = fl(x_v/τ) − lse with the lse and H the
 * forward handed it, so d_v is off by |Δlse| (fp32 lse vs exact) plus the rounding of
 * x_v/τ and of d_v; the element then moves by that times
 *   sensitivity_v = p_v (|g| + |e| (|d_v| + H + 1)) / τ,
 * and by p_v |e| |ΔH| / τ. Add 5e-7·sensitivity for exp and the fp32 arithmetic, the
 * rounding to the output dtype, and a 1e-7 floor (f16 subnormals). Doubled for safety.
 * The bound scales with the fp32 information the kernel has, so a formula error
 * (a missing 1/τ, a wrong sign or term) exceeds it by orders of magnitude.
 */
function gradientBound(
  logits: ArrayLike<number>, vocab: number, temperature: number, dtype: FloatDType,
  g: ArrayLike<number>, e: ArrayLike<number> | undefined,
  ref: { lse: ArrayLike<number>; entropy: ArrayLike<number> }, expected: ArrayLike<number>,
  lse: ArrayLike<number>, entropy: ArrayLike<number> | undefined,
): Float64Array {
  const bound = new Float64Array(expected.length);
  for (let n = 0; n < g.length; n++) {
    const en = e ? Math.abs(e[n]) : 0;
    const dLse = Math.abs(lse[n] - ref.lse[n]), dH = e && entropy ? Math.abs(entropy[n] - ref.entropy[n]) : 0;
    for (let v = 0; v < vocab; v++) {
      const i = n * vocab + v;
      const xs = logits[i] / temperature, d = xs - ref.lse[n], p = Math.exp(d);
      const sensitivity = (p * (Math.abs(g[n]) + en * (Math.abs(d) + ref.entropy[n] + 1))) / temperature;
      const dd = dLse + 2 ** -23 * (Math.abs(xs) + Math.abs(d));
      bound[i] = 1e-7 + 2 * (sensitivity * (dd + 5e-7) + (p * en * dH) / temperature) + OUTPUT_RTOL[dtype] * Math.abs(expected[i]);
    }
  }
  return bound;
}

/** f32 values stored as `dtype`, and the f32 values that storage really holds (for the reference). */
function stored(x: Float32Array, dtype: FloatDType): { bits: Float32Array | Uint16Array; exact: Float32Array } {
  if (dtype === 'f32') return { bits: x, exact: x };
  const bits = fromFloat32Array(x, dtype);
  return { bits, exact: toFloat32Array(bits, dtype) };
}

function logitsOn(x: { bits: Float32Array | Uint16Array }, rows: number, vocab: number, dtype: FloatDType): Tensor {
  return onDevice(x.bits, [rows, vocab], dtype === 'f32' ? undefined : dtype);
}

/** Rows of different scales and offsets; long rows also get rising and falling ramps,
 * so the running max moves in every chunk (rising) or never after the first (falling). */
function randomLogits(r: Rng, rows: number, vocab: number): Float32Array {
  const x = new Float32Array(rows * vocab);
  for (let n = 0; n < rows; n++) {
    const scale = r.uniform(0.1, 8), offset = r.uniform(-20, 20);
    const ramp = vocab > 1000 ? n % 3 : 2;
    for (let v = 0; v < vocab; v++) {
      const noise = r.normal() * scale + offset;
      x[n * vocab + v] = ramp === 0 ? (v * 40) / vocab + 0.1 * noise : ramp === 1 ? -(v * 40) / vocab + 0.1 * noise : noise;
    }
  }
  return x;
}

function shapeFor(r: Rng, vocab: number): number {
  return vocab > 1000 ? 3 : 2 * r.int(0, 40) + 1;  // odd, to leave a remainder wherever rows are split
}

describe(`tokenLogprobs on ${TEST_DEVICE}`, () => {
  it('matches the float64 reference: V = 1, 7, 50257; odd N; τ = 1, 0.7; entropy on and off; f32, bf16, f16', () => {
    const r = rng('tokenLogprobs');
    for (const vocab of [1, 7, 50257]) {
      for (const dtype of DTYPES) {
        for (const temperature of [1, 0.7]) {
          const rows = shapeFor(r, vocab);
          const x = stored(randomLogits(r, rows, vocab), dtype);
          const targets = r.ints(rows, 0, vocab);
          const ref = tokenLogprobsReference(x.exact, targets, vocab, temperature);
          const label = `V=${vocab} N=${rows} ${dtype} τ=${temperature}`;
          for (const entropy of [false, true]) {
            const out = tokenLogprobs(logitsOn(x, rows, vocab, dtype), onDevice(targets), { temperature, entropy });
            assertClose(values(out.logprobs), ref.logprobs, FWD, `logprobs ${label}`);
            assertClose(values(out.lse), ref.lse, FWD, `lse ${label}`);
            if (entropy) assertClose(values(out.entropy!), ref.entropy, FWD, `entropy ${label}`);
            else assert.equal(out.entropy, undefined);
          }
        }
      }
    }
  });

  it('backward matches the float64 reference, with and without gradEntropy, with temperature, in every dtype', () => {
    const r = rng('tokenLogprobsBackward');
    for (const vocab of [1, 7, 50257]) {
      for (const dtype of DTYPES) {
        for (const temperature of [1, 0.7]) {
          const rows = shapeFor(r, vocab);
          const x = stored(randomLogits(r, rows, vocab), dtype);
          const targets = r.ints(rows, 0, vocab);
          const g = r.normals(rows), e = r.normals(rows);
          const logits = logitsOn(x, rows, vocab, dtype);
          const fwd = tokenLogprobs(logits, onDevice(targets), { temperature, entropy: true });
          const refFwd = tokenLogprobsReference(x.exact, targets, vocab, temperature);
          for (const withEntropy of [false, true]) {
            const grad = tokenLogprobsBackward(logits, onDevice(targets), fwd.lse, onDevice(g), {
              temperature,
              ...(withEntropy ? { gradEntropy: onDevice(e), entropy: fwd.entropy } : {}),
            });
            assert.equal(grad.dtype, dtype);
            assert.deepEqual(grad.shape, [rows, vocab]);
            const expected = tokenLogprobsBackwardReference(x.exact, targets, vocab, g, withEntropy ? e : undefined, temperature);
            const bound = gradientBound(x.exact, vocab, temperature, dtype, g, withEntropy ? e : undefined, refFwd, expected,
              values(fwd.lse), values(fwd.entropy!));
            assertWithin(values(grad), expected, bound, `gradLogits V=${vocab} N=${rows} ${dtype} τ=${temperature} entropy=${withEntropy}`);
          }
        }
      }
    }
  });

  it('gradient agrees with central finite differences of the float64 loss Σ g·logp + e·H', () => {
    const r = rng('tokenLogprobs FD');
    for (const vocab of [7, 45]) {  // 45: vector body plus a 5-element tail
      const rows = 5, temperature = 0.7, h = 1e-4;
      const x = randomLogits(r, rows, vocab).map((v) => v * 0.2);  // keep p spread out so every term matters
      const targets = r.ints(rows, 0, vocab);
      const g = r.normals(rows), e = r.normals(rows);
      const logits = onDevice(x, [rows, vocab]);
      const fwd = tokenLogprobs(logits, onDevice(targets), { temperature, entropy: true });
      const grad = values(
        tokenLogprobsBackward(logits, onDevice(targets), fwd.lse, onDevice(g), { gradEntropy: onDevice(e), entropy: fwd.entropy, temperature }),
      );
      const xs = Float64Array.from(x);
      const fd = new Float64Array(xs.length);
      for (let j = 0; j < xs.length; j++) {
        const keep = xs[j];
        xs[j] = keep + h;
        const up = tokenLogprobsLossReference(xs, targets, vocab, g, e, temperature);
        xs[j] = keep - h;
        const down = tokenLogprobsLossReference(xs, targets, vocab, g, e, temperature);
        xs[j] = keep;
        fd[j] = (up - down) / (2 * h);
      }
      // Central differences at h = 1e-4 are good to ~1e-8 here (h²·L'''/6 and 1e-16·|L|/h):
      // the float64 reference backward must agree to that, the fp32 kernel to fp32 accuracy.
      assertClose(tokenLogprobsBackwardReference(x, targets, vocab, g, e, temperature), fd, { atol: 1e-7, rtol: 1e-6 }, 'reference vs FD');
      assertClose(grad, fd, { atol: 5e-6, rtol: 1e-4 }, `kernel vs FD (V=${vocab})`);
    }
  });

  it('inPlace writes the same gradient over the logits and returns them', () => {
    const r = rng('tokenLogprobs inPlace');
    for (const dtype of DTYPES) {
      const rows = 9, vocab = 1003, temperature = 0.7;
      const x = stored(randomLogits(r, rows, vocab), dtype);
      const targets = r.ints(rows, 0, vocab);
      const g = onDevice(r.normals(rows)), e = onDevice(r.normals(rows));
      const logits = logitsOn(x, rows, vocab, dtype);
      const fwd = tokenLogprobs(logits, onDevice(targets), { temperature, entropy: true });
      const opts = { temperature, gradEntropy: e, entropy: fwd.entropy };
      const separate = values(tokenLogprobsBackward(logits, onDevice(targets), fwd.lse, g, opts));
      const returned = tokenLogprobsBackward(logits, onDevice(targets), fwd.lse, g, { ...opts, inPlace: true });
      assert.equal(returned, logits);
      assertClose(values(logits), separate, { atol: 0, rtol: 0 }, `in place ${dtype}`);
    }
    if (!ON_GPU) {
      const plain = Float32Array.from([1, 2, 3, 4, 5, 6]);
      const fwd = tokenLogprobs(plain, new Int32Array([2, 0]));
      const expected = tokenLogprobsBackward(plain, new Int32Array([2, 0]), fwd.lse, new Float32Array([1, -1]));
      const returned = tokenLogprobsBackward(plain, new Int32Array([2, 0]), fwd.lse, new Float32Array([1, -1]), { inPlace: true });
      assert.equal(returned, plain);
      assert.deepEqual(Array.from(plain), Array.from(expected));
    }
  });

  it('stays finite and accurate for extreme logits (±1e4 spreads, one-hot, all-equal rows)', () => {
    const r = rng('tokenLogprobs extreme');
    const vocab = 301;
    const makers: ((v: number, y: number) => number)[] = [
      () => r.uniform(-1e4, 1e4),
      (v, y) => (v === y ? 1e4 : -1e4),                // one-hot on the target: logp ≈ 0, H ≈ 0
      (v, y) => (v === (y + 1) % vocab ? 1e4 : -1e4),  // one-hot elsewhere: logp ≈ −2e4
      () => 1e4,                                       // uniform: logp = −log V, H = log V
      (v, y) => (v === y || v === (y + 7) % vocab ? 1e4 : -1e4),  // two-hot: −log 2
      (v, y) => (v === y ? -1e4 : 1e4),
      () => 1e4 + r.normal(),                          // |lse| ≈ 1e4 with a spread-out softmax
    ];
    const rows = makers.length;
    for (const dtype of DTYPES) {
      for (const temperature of [1, 0.7]) {
        const targets = r.ints(rows, 0, vocab);
        const raw = new Float32Array(rows * vocab);
        makers.forEach((make, n) => { for (let v = 0; v < vocab; v++) raw[n * vocab + v] = make(v, targets[n]); });
        const x = stored(raw, dtype);
        const ref = tokenLogprobsReference(x.exact, targets, vocab, temperature);
        const logits = logitsOn(x, rows, vocab, dtype);
        const out = tokenLogprobs(logits, onDevice(targets), { temperature, entropy: true });
        const label = `${dtype} τ=${temperature}`;
        // The kernels take the softmax of fl(x/τ), as `logits / τ` in PyTorch would: for
        // τ ≠ 1 each scaled logit near 1.4e4 is off by up to half an ulp (5e-4), which is
        // below the quantisation of the f32 inputs themselves (an ulp of 1e4 is 1e-3).
        const scaledUlp = temperature === 1 ? 0 : 2 ** -23 * (1e4 / temperature);
        // logp ≈ −2e4 is as accurate as fp32 can say (an ulp of 2e4 is 2e-3): relative tolerance.
        assertClose(values(out.logprobs), ref.logprobs, { atol: 1e-5 + scaledUlp, rtol: 1e-6 }, `logprobs ${label}`);
        assertClose(values(out.lse), ref.lse, { atol: 1e-5, rtol: 2e-7 }, `lse ${label}`);
        assertClose(values(out.entropy!), ref.entropy, { atol: 2e-5 + scaledUlp, rtol: 1e-5 }, `entropy ${label}`);
        const g = r.normals(rows), e = r.normals(rows);
        const grad = tokenLogprobsBackward(logits, onDevice(targets), out.lse, onDevice(g), {
          gradEntropy: onDevice(e), entropy: out.entropy, temperature,
        });
        // At |lse| ≈ 1.4e4 the fp32 lse alone is off by up to 5e-4: gradientBound scales with it.
        const expected = tokenLogprobsBackwardReference(x.exact, targets, vocab, g, e, temperature);
        const bound = gradientBound(x.exact, vocab, temperature, dtype, g, e, ref, expected, values(out.lse), values(out.entropy!));
        assertWithin(values(grad), expected, bound, `gradLogits ${label}`);
      }
    }
  });

  it('gives p = 0 (not NaN or a wrong entropy) to finite logits whose x/τ overflows to −∞', () => {
    const r = rng('tokenLogprobs');
    // Positions: first element, inside the vector body, the scalar tail, a whole leading
    // 2048-element chunk; widths below one vector, one thread's share and many chunks.
    for (const V of [3, 7, 600, 5000]) {
      const rows = 4;
      const x = r.normals(rows * V, 2);
      const sink = (row: number, at: number) => { if (at < V) x[row * V + at] = -3e38; };
      sink(0, 0);
      sink(1, V >> 1);
      sink(2, V - 1);
      for (let v = 0; v < Math.min(V - 1, 2048); v++) sink(3, v);
      const targets = Int32Array.from({ length: rows }, (_, i) => (i === 2 ? 0 : V - 1));  // never a sunk logit
      const ref = tokenLogprobsReference(x, targets, V, 0.5);
      const out = tokenLogprobs(onDevice(x, [rows, V]), onDevice(targets), { temperature: 0.5, entropy: true });
      assertClose(values(out.logprobs), ref.logprobs, { atol: 2e-5, rtol: 2e-5 }, `logprobs (V=${V})`);
      assertClose(values(out.entropy!), ref.entropy, { atol: 2e-5, rtol: 2e-5 }, `entropy (V=${V})`);
      assertClose(values(out.lse), ref.lse, { atol: 2e-5, rtol: 2e-5 }, `lse (V=${V})`);
    }
  });

  it('both twins reject a non-finite lse, gradLogprobs, gradEntropy or entropy with the same words (raw addon)', () => {
    const N = 3, V = 600;
    const x = onDevice(rng('tokenLogprobs').normals(N * V), [N, V]), y = onDevice(Int32Array.from([0, 5, 599]));
    for (const [arg, bad] of [['lse', NaN], ['gradLogprobs', Infinity], ['gradEntropy', -Infinity], ['entropy', NaN]] as const) {
      const vectors: Record<string, Float32Array> = {};
      for (const k of ['lse', 'gradLogprobs', 'gradEntropy', 'entropy']) vectors[k] = new Float32Array(N).fill(0.5);
      vectors[arg][2] = bad;
      const t = (k: string) => onDevice(vectors[k]);
      assert.throws(() => addon().tokenLogprobsBackward(x, y, t('lse'), t('gradLogprobs'), { gradEntropy: t('gradEntropy'), entropy: t('entropy') }),
        (e: Error) => e instanceof RangeError && e.message === `${arg}: element 2 is ${bad}; inputs must be finite`, arg);
    }
  });

  // Issue 12 item 5: the backward formed p = exp(x/τ − lse) from the f32 lse, whose
  // rounding at |lse| = 3e6 or 1e8 swallowed log 3: three tied logits each got p = 1.
  it('backward keeps p exact for tied logits at huge |x/τ| (the f32 lse has lost log Σ)', () => {
    const cases: Array<{ top: number; rest: number; temperature: number; dtypes: FloatDType[] }> = [
      { top: 30, rest: -30, temperature: 1e-5, dtypes: ['f32', 'bf16'] },  // f16 cannot hold a gradient of 1/τ
      { top: 1e8, rest: -1e8, temperature: 1, dtypes: ['f32', 'bf16'] },
      { top: 5000, rest: 4990, temperature: 1, dtypes: ['f32'] },  // |lse| ≈ 5e3 with a spread-out tail
    ];
    for (const { top, rest, temperature, dtypes } of cases) {
      for (const vocab of [7, 301, 40_000]) {
        for (const dtype of dtypes) {
          const rows = 3;
          const raw = new Float32Array(rows * vocab).fill(rest);
          const ties = [1, 4, 5];  // three tied maxima per row; the target is one of them in row 0
          for (let n = 0; n < rows; n++) for (const v of ties) raw[n * vocab + v] = top;
          const targets = Int32Array.of(4, 0, 6);
          const x = stored(raw, dtype);
          const logits = logitsOn(x, rows, vocab, dtype);
          const out = tokenLogprobs(logits, onDevice(targets), { temperature });
          const g = Float32Array.of(1, 1, 1);
          const grad = values(tokenLogprobsBackward(logits, onDevice(targets), out.lse, onDevice(g), { temperature }));
          const expected = tokenLogprobsBackwardReference(x.exact, targets, vocab, g, new Float32Array(rows), temperature);
          const label = `top ${top}, τ ${temperature}, V ${vocab}, ${dtype}`;
          // p_v = −grad_v·τ away from the target: 1/3 at each tie when the rest is far below
          // (the forward was always exact).
          const tiedP = -grad[1 * vocab + 1] * temperature;
          // The gradient is stored in the logits' dtype: bf16 keeps 8 bits of it.
          const rtol = dtype === 'bf16' ? 4e-3 : 1e-5;
          if (top - rest > 100) assertClose(tiedP, 1 / 3, { atol: 0, rtol }, `p at a tie, ${label}`);
          assertClose(tiedP, -expected[1 * vocab + 1] * temperature, { atol: 0, rtol: Math.max(rtol, 1e-4) }, `p at a tie, ${label}`);
          const scale = 1 / temperature;
          assertClose(grad, expected, { atol: 1e-4 * scale, rtol: dtype === 'bf16' ? 4e-3 : 1e-4 }, `gradLogits ${label}`);
        }
      }
    }
  });

  // Found by the fuzzer: an lse that is not the forward's (another temperature, other
  // logits) made p = e^(x/τ − lse) unbounded, and the gradients came back ±Infinity.
  it('backward refuses an lse below the log-sum-exp of these logits, naming the row', () => {
    const logits = onDevice(Float32Array.of(0, 1, 2, 3, 10, 0, 50, -50), [2, 4]);
    const targets = onDevice(Int32Array.of(0, 1));
    const g = onDevice(Float32Array.of(1, 1));
    const warm = tokenLogprobs(logits, targets, { temperature: 2 });
    assert.throws(() => tokenLogprobsBackward(logits, targets, warm.lse, g, { temperature: 1 }),
      (e: Error) => e instanceof RangeError && /^lse: row 0 is below the log-sum-exp of logits \/ temperature/.test(e.message));
    assert.throws(() => tokenLogprobsBackward(logits, targets, onDevice(Float32Array.of(3.5, 0)), g),
      (e: Error) => e instanceof RangeError && /^lse: row 1/.test(e.message));
    // The forward's own lse, and one above it (probabilities too small, still finite), pass.
    const own = tokenLogprobs(logits, targets);
    assert.doesNotThrow(() => tokenLogprobsBackward(logits, targets, own.lse, g));
    assert.doesNotThrow(() => tokenLogprobsBackward(logits, targets, onDevice(Float32Array.of(100, 100)), g));
  });

  // Issue 12: the gradient takes the logits' dtype, and float16 ends at 65504. At τ = 1e-5
  // a target's (1 − p)/τ is ~8e4, which came back as a silent ±Infinity.
  it('backward refuses a gradient beyond its dtype\'s range, naming logits and the row', () => {
    const targets = onDevice(Int32Array.of(1, 0, 2));
    const raw = Float32Array.of(0, 0.5, 0.25, 0, 0, 0, 0.1, 0.2, 0.3);
    const x = stored(raw, 'f16');
    const logits = logitsOn(x, 3, 3, 'f16');
    const run = (temperature: number, g: Float32Array, inPlace = false) => {
      const own = tokenLogprobs(logits, targets, { temperature });
      return tokenLogprobsBackward(inPlace ? logitsOn(stored(raw, 'f16'), 3, 3, 'f16') : logits, targets, own.lse, onDevice(g), { temperature, inPlace });
    };
    for (const inPlace of [false, true])
      assert.throws(() => run(1e-5, Float32Array.of(0, 1, 0), inPlace), (e: Error) => e instanceof RangeError &&
        /^logits: the gradient of row 1 is beyond float16's range \(±65504\).*pass f32 or bf16 logits/.test(e.message));
    // Within range it is the reference's gradient, still in f16.
    const grad = values(run(1e-4, Float32Array.of(1, 0.5, 1)));
    const expected = tokenLogprobsBackwardReference(x.exact, Int32Array.of(1, 0, 2), 3, Float32Array.of(1, 0.5, 1), new Float32Array(3), 1e-4);
    assert.ok(grad.every(Number.isFinite));
    assertClose(grad, expected, { atol: 1, rtol: 2e-3 }, 'f16 gradient at τ = 1e-4');
    // float32 (and bf16) end near 3.4e38: a huge gradLogprobs over a tiny τ passes it
    // (row 0's target has p = 0, so its gradient is g/τ = 1e40).
    const big = onDevice(Float32Array.of(0, 0.5, 0.25, 0, 0, 0), [2, 3]);
    const two = onDevice(Int32Array.of(0, 0));
    const own = tokenLogprobs(big, two, { temperature: 1e-10 });
    assert.throws(() => tokenLogprobsBackward(big, two, own.lse, onDevice(Float32Array.of(1e30, 1)), { temperature: 1e-10 }),
      (e: Error) => e instanceof RangeError && /^logits: the gradient of row 0 is beyond float32's range/.test(e.message));
  });

  // Issue 12 item 5: τ = 1e-38 was accepted; its inverse overflows float32.
  it('rejects temperatures whose inverse overflows float32, in every op', () => {
    const logits = onDevice(Float32Array.of(0, 1, 2, 3), [2, 2]);
    const targets = onDevice(Int32Array.of(0, 1));
    for (const temperature of [1e-38, 1e-40, 1e-46, 2.9e-39])
      for (const call of [
        () => tokenLogprobs(logits, targets, { temperature }),
        () => tokenLogprobsBackward(logits, targets, onDevice(new Float32Array(2)), onDevice(new Float32Array(2)), { temperature }),
      ]) assert.throws(call, (e: Error) => e instanceof RangeError && /^temperature: .* 1\/temperature overflows float32/.test(e.message));
    assert.doesNotThrow(() => tokenLogprobs(onDevice(Float32Array.of(0, 1e-30, 0, 0), [2, 2]), targets, { temperature: 1e-30 }));
  });

  it('rejects NaN and ±Inf anywhere in the logits with a RangeError naming the row', () => {
    const r = rng('tokenLogprobs nonfinite');
    for (const dtype of DTYPES) {
      for (const bad of [NaN, Infinity, -Infinity]) {
        for (const vocab of [50, 5003]) {
          const rows = 4, badRow = r.int(0, rows);
          for (const column of [r.int(0, vocab), vocab - 1]) {  // vector body, and the scalar tail
            const x = stored(randomLogits(r, rows, vocab), dtype);
            x.bits[badRow * vocab + column] = dtype === 'f32' ? bad : dtype === 'bf16' ? f32ToBf16(bad) : f32ToF16(bad);
            const targets = onDevice(r.ints(rows, 0, vocab));
            const logits = logitsOn(x, rows, vocab, dtype);
            const message = new RegExp(`^logits: row ${badRow} contains NaN or Inf`);
            const check = (err: unknown) => err instanceof RangeError && message.test(err.message);
            assert.throws(() => tokenLogprobs(logits, targets, { entropy: true }), check, `forward ${dtype} ${bad} V=${vocab}`);
            const zeros = onDevice(new Float32Array(rows));
            assert.throws(() => tokenLogprobsBackward(logits, targets, zeros, zeros), check, `backward ${dtype} ${bad} V=${vocab}`);
          }
        }
      }
    }
  });

  it('rejects logits that overflow float32 once divided by the temperature', () => {
    const logits = onDevice(Float32Array.from([3e38, 1, 2, 3]), [2, 2]);
    assert.throws(() => tokenLogprobs(logits, onDevice(new Int32Array([0, 1])), { temperature: 0.5 }), /^RangeError: logits: row 0 overflows/);
  });

  it('rejects targets outside [0, V) (checked on the device for CUDA tensors)', () => {
    const logits = onDevice(new Float32Array(3 * 7), [3, 7]);
    for (const bad of [-1, 7]) {
      assert.throws(() => tokenLogprobs(logits, onDevice(new Int32Array([0, bad, 6]))), (err: unknown) => err instanceof RangeError && /^targets: /.test(err.message));
      const zeros = onDevice(new Float32Array(3));
      assert.throws(() => tokenLogprobsBackward(logits, onDevice(new Int32Array([0, 0, bad])), zeros, zeros), /^RangeError: targets: /);
    }
  });

  it('handles N = 0', () => {
    for (const vocab of [0, 5]) {
      const out = tokenLogprobs(onDevice(new Float32Array(0), [0, vocab]), onDevice(new Int32Array(0)), { entropy: true });
      assert.equal(values(out.logprobs).length, 0);
      assert.equal(values(out.entropy!).length, 0);
      const empty = onDevice(new Float32Array(0));
      const grad = tokenLogprobsBackward(onDevice(new Float32Array(0), [0, vocab]), onDevice(new Int32Array(0)), empty, empty);
      assert.deepEqual(grad.shape, [0, vocab]);
    }
  });

  if (!ON_GPU) {
    it('gives the same bits whatever the thread count (rows split into pieces merge in a fixed order)', () => {
      // Separate processes with LGRPO_NUM_THREADS, so each pool is sized once at start-up.
      const seed = rng('tokenLogprobs threads').int(1, 2 ** 31);
      const index = new URL('../../src/index.js', import.meta.url).href;
      const script = `
        import { createHash } from 'node:crypto';
        const m = await import(${JSON.stringify(index)});
        let s = ${seed};
        const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296;
        const rows = 3, vocab = 50257;
        const x = new Float32Array(rows * vocab).map(() => (next() - 0.5) * 20);
        const t = Int32Array.from({ length: rows }, () => Math.floor(next() * vocab));
        const f = m.tokenLogprobs(x, t, { entropy: true, temperature: 0.7 });
        const g = m.tokenLogprobsBackward(x, t, f.lse, Float32Array.from([1, -2, 0.5]), {
          gradEntropy: Float32Array.from([0.3, 1, -1]), entropy: f.entropy, temperature: 0.7 });
        const hash = createHash('sha256');
        for (const a of [f.logprobs, f.entropy, f.lse, g]) hash.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
        console.log(m.buildInfo().threads, hash.digest('hex'));`;
      const digest = (threads: number) => {
        const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
          env: { ...process.env, LGRPO_NUM_THREADS: String(threads) }, encoding: 'utf8',
        });
        assert.equal(child.status, 0, child.stderr);
        const [used, hash] = child.stdout.trim().split(' ');
        assert.equal(Number(used), threads);
        return hash;
      };
      const one = digest(1);
      assert.equal(digest(2), one);
      assert.equal(digest(3), one);
    });

    it('returns TypedArrays for TypedArray logits and Tensors for Tensors, gradLogits in the logits dtype', () => {
      const x = Float32Array.from([0.5, -1, 2, 0, 3, 1]);
      const plain = tokenLogprobs(x, new Int32Array([1, 2]), { entropy: true });
      assert.ok(plain.logprobs instanceof Float32Array && plain.lse instanceof Float32Array && plain.entropy instanceof Float32Array);
      assert.ok(tokenLogprobsBackward(x, new Int32Array([1, 2]), plain.lse, new Float32Array([1, 1])) instanceof Float32Array);
      const bits = fromFloat32Array(x, 'bf16');
      const half = tokenLogprobs(bits, new Int32Array([1, 2]), { dtype: 'bf16' });
      const grad = tokenLogprobsBackward(bits, new Int32Array([1, 2]), half.lse, new Float32Array([1, 1]), { dtype: 'bf16' });
      assert.ok(grad instanceof Uint16Array && grad.length === 6);
      const wrapped = tokenLogprobs(Tensor.from(x, [2, 3]), new Int32Array([1, 2]));
      assert.ok(wrapped.logprobs instanceof Tensor && wrapped.lse instanceof Tensor);
      assertClose(wrapped.logprobs.data as Float32Array, plain.logprobs, { atol: 0, rtol: 0 });
    });

    it('rejects bad arguments with errors that name the argument', () => {
      const x = new Float32Array(6), t = new Int32Array([0, 1]), row = new Float32Array(2);
      assert.throws(() => tokenLogprobs(new Float32Array(7), t), /^RangeError: logits: length 7 does not fit shape \[2, \?\]/);
      assert.throws(() => tokenLogprobs(Tensor.from(x), t), /^RangeError: logits: expected shape \[2, \?\], got \[6\]/);
      assert.throws(() => tokenLogprobs(new Int32Array(6), t), /^TypeError: logits: expected dtype f32 or bf16 or f16, got i32/);
      assert.throws(() => tokenLogprobs(new Uint16Array(6), t), /^TypeError: logits: .*needs \{dtype: "bf16" \| "f16"\}/);
      assert.throws(() => tokenLogprobs(x, new Float32Array(2)), /^TypeError: targets: expected dtype i32, got f32/);
      assert.throws(() => tokenLogprobs(x, [0, 1] as never), /^TypeError: targets: expected a Tensor or a TypedArray/);
      assert.throws(() => tokenLogprobs(x, new Int32Array([0, 3])), /^RangeError: targets: target 3 at index 1 is outside \[0, 3\)/);
      assert.throws(() => tokenLogprobs(x, new Int32Array([-1, 0])), /^RangeError: targets: target -1 at index 0/);
      assert.throws(() => tokenLogprobs(x, t, { temperature: 0 }), /^RangeError: temperature: expected > 0/);
      assert.throws(() => tokenLogprobs(x, t, { temperature: NaN }), /^TypeError: temperature: expected a finite number/);
      assert.throws(() => tokenLogprobs(x, t, { entropy: 1 as never }), /^TypeError: entropy: expected a boolean/);
      assert.throws(() => tokenLogprobs(x, t, { dtype: 'i32' as never }), /^TypeError: dtype: expected one of/);
      assert.throws(() => tokenLogprobs(x, t, { dtype: 'bf16' }), /^TypeError: dtype: the option says bf16 but logits are f32/);
      assert.throws(() => tokenLogprobs(x, t, 'fast' as never), /^TypeError: options: expected an object/);

      assert.throws(() => tokenLogprobsBackward(x, t, row, row, { gradEntropy: row }), /^TypeError: gradEntropy: needs `entropy`/);
      assert.throws(() => tokenLogprobsBackward(x, t, new Float32Array(3), row), /^RangeError: lse: length 3 does not fit shape \[2\]/);
      assert.throws(() => tokenLogprobsBackward(x, t, row, new Int32Array(2)), /^TypeError: gradLogprobs: expected dtype f32/);
      assert.throws(() => tokenLogprobsBackward(x, t, Float32Array.from([0, Infinity]), row), /^RangeError: lse: element 1 is Infinity/);
      assert.throws(() => tokenLogprobsBackward(x, t, row, Float32Array.from([NaN, 0])), /^RangeError: gradLogprobs: element 0 is NaN/);
      assert.throws(
        () => tokenLogprobsBackward(x, t, row, row, { gradEntropy: Float32Array.from([0, NaN]), entropy: row }),
        /^RangeError: gradEntropy: element 1 is NaN/,
      );
      assert.throws(
        () => tokenLogprobsBackward(x, t, row, row, { gradEntropy: row, entropy: new Float32Array(1) }),
        /^RangeError: entropy: length 1 does not fit shape \[2\]/,
      );
      assert.throws(() => tokenLogprobsBackward(x, t, row, row, { inPlace: 'yes' as never }), /^TypeError: inPlace: expected a boolean/);
      assert.throws(() => tokenLogprobsBackward(x, t, row, row, { temperature: -1 }), /^RangeError: temperature: expected > 0/);
    });

    it('the raw addon rejects what the wrapper would, without crashing', () => {
      const raw = addon();
      const x = Tensor.from(new Float32Array(4), [2, 2]);
      assert.throws(() => raw.tokenLogprobs(x, Tensor.from(new Int32Array([0, 5]))), /^RangeError: targets: target 5 at index 1/);
      assert.throws(() => raw.tokenLogprobs(Tensor.from(new Float32Array(4)), Tensor.from(new Int32Array([0, 1]))), /^RangeError: logits: expected 2 dimensions/);
      assert.throws(() => raw.tokenLogprobs(x, Tensor.from(new Int32Array([0]))), /^RangeError: targets: expected shape \[2\]/);
      assert.throws(() => raw.tokenLogprobs(x, Tensor.from(new Int32Array([0, 1])), { temperature: 1e-60 }), /^RangeError: temperature:/);
      const row = Tensor.from(new Float32Array(2));
      const targets = Tensor.from(new Int32Array([0, 1]));
      assert.throws(() => raw.tokenLogprobsBackward(x, targets, row, row, { gradEntropy: row }), /^TypeError: gradEntropy: needs `entropy`/);
      assert.throws(() => raw.tokenLogprobsBackward(x, targets, row, Tensor.from(new Float32Array(3))), /^RangeError: gradLogprobs: expected shape \[2\]/);
    });
  }
});
