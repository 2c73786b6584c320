import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor } from '../../src/index.js';
import { rmsNormBackward, rmsNormForward } from '../../src/ops/rms_norm.js';
import { rmsNormBackwardReference, rmsNormReference } from '../reference/rms_norm.js';
import { ON_GPU, assertClose, dot, fdCheck, rng, values, type Rng } from '../helpers.js';
import { hashInChild, here } from './thread_determinism.js';

const SHAPES: [number, number][] = [[1, 1], [5, 7], [3, 13], [33, 100], [6, 899], [2, 1024]];

describe('rmsNorm (engine leaf, CPU)', () => {
  it('forward matches the float64 reference on awkward shapes', () => {
    const r = rng('rmsNorm');
    for (const [rows, dim] of SHAPES) {
      const x = r.normals(rows * dim, 2), w = r.normals(dim);
      const eps = 1e-6;
      const out = rmsNormForward(Tensor.from(x, [rows, dim]), w, { eps });
      const ref = rmsNormReference(x, w, rows, dim, eps);
      assertClose(values(out.y as Tensor), ref.y, { atol: 1e-5, rtol: 1e-5 }, `y ${rows}x${dim}`);
      assertClose(values(out.rstd as Tensor), ref.rstd, { atol: 1e-6, rtol: 1e-5 }, `rstd ${rows}x${dim}`);
      assert.deepEqual((out.y as Tensor).shape, [rows, dim]);
    }
  });

  it('the reference gradients agree with central finite differences (float64)', () => {
    const r = rng('rmsNorm fd');
    for (const [rows, dim] of [[3, 5], [2, 13], [4, 9]] as const) {
      const x = Float64Array.from(r.normals(rows * dim)), w = Float64Array.from(r.normals(dim)), dy = Float64Array.from(r.normals(rows * dim));
      const eps = 1e-3;  // a large eps so its contribution is exercised too
      const { dx, dw } = rmsNormBackwardReference(x, w, dy, rows, dim, eps);
      fdCheck('dx', (xx) => dot(rmsNormReference(xx, w, rows, dim, eps).y, dy), x, dx, r);
      fdCheck('dw', (ww) => dot(rmsNormReference(x, ww, rows, dim, eps).y, dy), w, dw, r, 8);
    }
  });

  it('backward matches the reference, accumulates dweight and leaves dy intact', () => {
    const r = rng('rmsNorm backward');
    for (const [rows, dim] of SHAPES) {
      const x = r.normals(rows * dim), w = r.normals(dim), dy = r.normals(rows * dim);
      const dyCopy = dy.slice();
      const eps = 1e-5;
      const fwd = rmsNormForward(x, w, { eps });
      const ref = rmsNormBackwardReference(x, w, dy, rows, dim, eps);
      const fresh = rmsNormBackward(x, w, fwd.rstd, dy);
      assertClose(fresh.dx as Float32Array, ref.dx, { atol: 2e-5, rtol: 1e-4 }, `dx ${rows}x${dim}`);
      assertClose(fresh.dweight as Float32Array, ref.dw, { atol: 2e-5 * Math.sqrt(rows), rtol: 1e-4 }, `dweight ${rows}x${dim}`);
      // Accumulation: a buffer that already holds a gradient gets the new one added.
      const prior = r.normals(dim);
      const acc = prior.slice();
      const again = rmsNormBackward(x, w, fwd.rstd, dy, { dweight: acc });
      assert.equal(again.dweight, acc, 'returns the given buffer');
      assertClose(acc, Float64Array.from(ref.dw, (g, i) => g + prior[i]), { atol: 3e-5 * Math.sqrt(rows), rtol: 1e-4 }, 'dweight +=');
      assert.deepEqual(dy, dyCopy);
    }
  });

  it('is deterministic: identical bits twice, and for 1, 2 or 3 threads', () => {
    const r = rng('rmsNorm determinism');
    const rows = 64, dim = 899;
    const x = r.normals(rows * dim), w = r.normals(dim), dy = r.normals(rows * dim);
    const run = () => {
      const f = rmsNormForward(x, w);
      const b = rmsNormBackward(x, w, f.rstd, dy);
      return [f.y, f.rstd, b.dx, b.dweight] as Float32Array[];
    };
    assert.deepEqual(run(), run());
    // Thread counts are fixed per process (LGRPO_NUM_THREADS), so each runs in a child.
    const seed = r.int(1, 2 ** 31);
    const hashes = [1, 2, 3].map((threads) =>
      hashInChild(threads, `
        const { rmsNormForward, rmsNormBackward } = await import(${JSON.stringify(here('../../src/ops/rms_norm.js'))});
        const r = new Rng(${seed});
        const rows = 64, dim = 899;
        const x = r.normals(rows * dim), w = r.normals(dim), dy = r.normals(rows * dim);
        const f = rmsNormForward(x, w);
        const b = rmsNormBackward(x, w, f.rstd, dy);
        done([f.y, f.rstd, b.dx, b.dweight]);`));
    assert.equal(hashes[1], hashes[0], '2 threads vs 1');
    assert.equal(hashes[2], hashes[0], '3 threads vs 1');
  });

  it('rejects bad input with errors naming the argument', () => {
    const x = new Float32Array(6), w = new Float32Array(3);
    assert.throws(() => rmsNormForward(x, new Float32Array(4)), /x: length 6 does not fit shape \[\?, 4\]/);
    assert.throws(() => rmsNormForward(x, new Float32Array(0)), /weight: expected at least one element/);
    assert.throws(() => rmsNormForward(new Float64Array(6) as never, w), /x: expected/);
    assert.throws(() => rmsNormForward(x, w, { eps: 0 }), /eps: expected > 0/);
    assert.throws(() => rmsNormForward(Float32Array.from([1, 2, 3, 4, NaN, 6]), w), /x: row 1 contains a non-finite value/);
    assert.throws(() => rmsNormForward(Float32Array.from([1, 2, 3, Infinity, 5, 6]), w), /x: row 1 contains a non-finite value/);
    const f = rmsNormForward(x, w);
    assert.throws(() => rmsNormBackward(x, w, new Float32Array(3), x), /rstd: length 3 does not fit shape \[2\]/);
    assert.throws(() => rmsNormBackward(x, w, f.rstd, new Float32Array(5)), /dy: length 5/);
    assert.throws(() => rmsNormBackward(x, w, f.rstd, x, { dweight: new Float32Array(2) }), /dweight: length 2/);
    assert.throws(() => rmsNormBackward(x, w, new Int32Array(2) as never, x), /rstd: expected/);
  });

  if (ON_GPU) {
    it('says clearly that CUDA tensors are not supported yet', () => {
      const x = Tensor.from(new Float32Array(6), [2, 3]).to('cuda:0');
      const w = Tensor.from(new Float32Array(3)).to('cuda:0');
      assert.throws(() => rmsNormForward(x, w), /not yet available on CUDA/);
    });
  }
});
