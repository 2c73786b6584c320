import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor } from '../../src/index.js';
import { swigluBackward, swigluForward } from '../../src/ops/swiglu.js';
import { swigluBackwardReference, swigluReference } from '../reference/swiglu.js';
import { ON_GPU, assertClose, dot, fdCheck, rng, values, type Rng } from '../helpers.js';
import { hashInChild, here } from './thread_determinism.js';

/** Gates spanning the whole range, including saturated ones where σ over/underflows. */
function gates(r: Rng, n: number): Float32Array {
  const g = r.normals(n, 3);
  for (let i = 0; i < n; i += 11) g[i] = r.uniform(-120, 120);
  return g;
}

describe('swiglu (engine leaf, CPU)', () => {
  it('forward and backward match the float64 reference on awkward shapes', () => {
    const r = rng('swiglu');
    for (const [rows, inter] of [[1, 1], [3, 7], [5, 13], [17, 61], [4, 4864 + 3]]) {
      const n = rows * inter;
      const g = gates(r, n), u = r.normals(n), dh = r.normals(n);
      const h = swigluForward(Tensor.from(g, [rows, inter]), Tensor.from(u, [rows, inter]));
      assert.deepEqual(h.shape, [rows, inter]);
      assertClose(values(h), swigluReference(g, u), { atol: 1e-6, rtol: 2e-6 }, `h ${rows}x${inter}`);
      const grads = swigluBackward(g, u, dh);
      const ref = swigluBackwardReference(g, u, dh);
      assertClose(grads.dgate, ref.dgate, { atol: 1e-6, rtol: 2e-6 }, `dgate ${rows}x${inter}`);
      assertClose(grads.dup, ref.dup, { atol: 1e-6, rtol: 2e-6 }, `dup ${rows}x${inter}`);
    }
  });

  it('the reference gradients agree with central finite differences (float64)', () => {
    const r = rng('swiglu fd');
    const n = 40;
    const g = Float64Array.from(r.normals(n, 3)), u = Float64Array.from(r.normals(n)), dh = Float64Array.from(r.normals(n));
    const ref = swigluBackwardReference(g, u, dh);
    fdCheck('dgate', (gg) => dot(swigluReference(gg, u), dh), g, ref.dgate, r);
    fdCheck('dup', (uu) => dot(swigluReference(g, uu), dh), u, ref.dup, r);
  });

  it('is deterministic: identical bits twice, and for 1, 2 or 3 threads', () => {
    const r = rng('swiglu determinism');
    const n = 100003;
    const g = gates(r, n), u = r.normals(n), dh = r.normals(n);
    const run = () => {
      const b = swigluBackward(g, u, dh);
      return [swigluForward(g, u), b.dgate, b.dup];
    };
    assert.deepEqual(run(), run());
    const seed = r.int(1, 2 ** 31);
    const hashes = [1, 2, 3].map((threads) =>
      hashInChild(threads, `
        const { swigluForward, swigluBackward } = await import(${JSON.stringify(here('../../src/ops/swiglu.js'))});
        const r = new Rng(${seed});
        const n = 100003, g = r.normals(n, 3), u = r.normals(n), dh = r.normals(n);
        const b = swigluBackward(g, u, dh);
        done([swigluForward(g, u), b.dgate, b.dup]);`));
    assert.equal(hashes[1], hashes[0], '2 threads vs 1');
    assert.equal(hashes[2], hashes[0], '3 threads vs 1');
  });

  it('rejects bad input with errors naming the argument', () => {
    const a = new Float32Array(6);
    assert.throws(() => swigluForward(a, new Float32Array(5)), /up: length 5 does not fit shape \[6\]/);
    assert.throws(() => swigluForward(Tensor.from(a, [2, 3]), Tensor.from(a, [3, 2])), /up: expected shape \[2, 3\], got \[3, 2\]/);
    assert.throws(() => swigluForward(new Int32Array(6) as never, a), /gate: expected/);
    assert.throws(() => swigluBackward(a, a, new Float32Array(2)), /dh: length 2/);
    assert.throws(() => swigluBackward(a, 'x' as never, a), /up: expected a Tensor or a TypedArray/);
  });

  if (ON_GPU) {
    it('says clearly that CUDA tensors are not supported yet', () => {
      const g = Tensor.from(new Float32Array(6)).to('cuda:0');
      assert.throws(() => swigluForward(g, g), /not yet available on CUDA/);
    });
  }
});

describe('swiglu: bits independent of the array length', () => {
  it('gives each element the same bits in a long array and in a short one', () => {
    const r = rng('swiglu-length');
    const n = 61; // not a multiple of 8: the tail must take the same path as the body
    const g = r.normals(n, 3), u = r.normals(n, 3);
    const whole = swigluForward(g, u);
    for (const start of [0, 5, 56]) {
      const part = swigluForward(g.slice(start, start + 5), u.slice(start, start + 5));
      assert.deepEqual(Array.from(part), Array.from(whole.slice(start, start + 5)), `elements ${start}..${start + 4}`);
    }
  });
});
