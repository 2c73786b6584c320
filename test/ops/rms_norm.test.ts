import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor } from '../../src/index.js';
import { rmsNormBackward, rmsNormForward } from '../../src/ops/rms_norm.js';
import { rmsNormBackwardReference, rmsNormReference } from '../reference/rms_norm.js';
import { ON_GPU, TEST_DEVICE, assertClose, dot, fdCheck, onDevice, rng, values, type Rng } from '../helpers.js';
import { hashInChild, here } from './thread_determinism.js';

const SHAPES: [number, number][] = [[1, 1], [5, 7], [3, 13], [33, 100], [6, 899], [2, 1024]];

describe(`rmsNorm (engine leaf) on ${TEST_DEVICE}`, () => {
  it('forward matches the float64 reference on awkward shapes', () => {
    const r = rng('rmsNorm');
    for (const [rows, dim] of SHAPES) {
      const x = r.normals(rows * dim, 2), w = r.normals(dim);
      const eps = 1e-6;
      const out = rmsNormForward(onDevice(x, [rows, dim]), onDevice(w), { eps });
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
      const xt = onDevice(x, [rows, dim]), wt = onDevice(w), dyt = onDevice(dy, [rows, dim]);
      const eps = 1e-5;
      const fwd = rmsNormForward(xt, wt, { eps });
      const ref = rmsNormBackwardReference(x, w, dy, rows, dim, eps);
      const fresh = rmsNormBackward(xt, wt, fwd.rstd, dyt);
      assertClose(values(fresh.dx as Tensor), ref.dx, { atol: 2e-5, rtol: 1e-4 }, `dx ${rows}x${dim}`);
      assertClose(values(fresh.dweight as Tensor), ref.dw, { atol: 2e-5 * Math.sqrt(rows), rtol: 1e-4 }, `dweight ${rows}x${dim}`);
      // Accumulation: a buffer that already holds a gradient gets the new one added.
      const prior = r.normals(dim);
      const acc = onDevice(prior.slice());  // a copy: on the CPU the tensor shares the array
      const again = rmsNormBackward(xt, wt, fwd.rstd, dyt, { dweight: acc });
      assert.equal(again.dweight, acc, 'returns the given buffer');
      assertClose(values(acc), Float64Array.from(ref.dw, (g, i) => g + prior[i]), { atol: 3e-5 * Math.sqrt(rows), rtol: 1e-4 }, 'dweight +=');
      assert.deepEqual(values(dyt), dyCopy);
    }
  });

  it('is deterministic: identical bits twice, and for 1, 2 or 3 threads', () => {
    const r = rng('rmsNorm determinism');
    const rows = 64, dim = 899;
    const x = r.normals(rows * dim), w = r.normals(dim), dy = r.normals(rows * dim);
    const xt = onDevice(x, [rows, dim]), wt = onDevice(w), dyt = onDevice(dy, [rows, dim]);
    const run = () => {
      const f = rmsNormForward(xt, wt);
      const b = rmsNormBackward(xt, wt, f.rstd, dyt);
      return [f.y, f.rstd, b.dx, b.dweight].map((t) => values(t as Tensor));
    };
    assert.deepEqual(run(), run());
    if (ON_GPU) return;  // the CPU twin's thread count; one CUDA launch shape per size
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
    it('rejects inputs on different devices and non-finite rows on the device', () => {
      const x = onDevice(new Float32Array(6), [2, 3]), w = onDevice(new Float32Array(3));
      assert.throws(() => rmsNormForward(x, new Float32Array(3)), { name: 'TypeError', message: /^weight: is on cpu/ });
      assert.throws(() => rmsNormForward(onDevice(Float32Array.from([1, 2, 3, 4, NaN, 6]), [2, 3]), w), /x: row 1 contains a non-finite value/);
      assert.throws(() => rmsNormForward(onDevice(Float32Array.from([1, Infinity, 3, 4, 5, 6]), [2, 3]), w), /x: row 0 contains a non-finite value/);
      const f = rmsNormForward(x, w);
      assert.throws(() => rmsNormBackward(x, w, f.rstd, new Float32Array(6)), { name: 'TypeError', message: /^dy: is on cpu/ });
      assert.throws(() => rmsNormBackward(x, w, f.rstd, x, { dweight: new Float32Array(3) }), { name: 'TypeError', message: /^dweight: is on cpu/ });
    });

    // Tolerances from the summation orders (the two twins add in different orders, each
    // within about n·u·Σ|terms| of exact for an n-term chain; the CPU chains are D/16 long
    // plus a 16-lane tree, the CUDA ones D/256 plus a 256-thread tree, so (D/8 + 40)·u
    // covers the difference). The backward gets the same rstd on both devices, so it is
    // compared on its own arithmetic.
    it('matches the CPU twin on the same inputs, forward and backward', () => {
      const r = rng('rmsNorm twin');
      const u = 2 ** -24;
      for (const [rows, dim] of [[1, 1], [0, 5], [5, 7], [3, 257], [33, 100], [70, 899], [2, 1024], [1, 3000]] as const) {
        const label = `${rows}x${dim}`;
        const x = r.normals(rows * dim, r.uniform(0.1, 10)), w = r.normals(dim), dy = r.normals(rows * dim);
        const eps = 1e-5;
        const cpu = rmsNormForward(x, w, { eps });
        const dev = rmsNormForward(onDevice(x, [rows, dim]), onDevice(w), { eps });
        const sumRel = (dim / 8 + 40) * u;
        const rstdCpu = cpu.rstd as Float32Array, yCpu = cpu.y as Float32Array;
        assertClose(values(dev.rstd as Tensor), rstdCpu, { atol: 0, rtol: sumRel }, `rstd ${label}`);
        const yDev = values(dev.y as Tensor);
        for (let i = 0; i < yCpu.length; i++) {
          const bound = (sumRel + 4 * u) * Math.abs(yCpu[i]);
          if (!(Math.abs(yDev[i] - yCpu[i]) <= bound)) assert.fail(`y ${label}[${i}] = ${yDev[i]} on ${TEST_DEVICE}, ${yCpu[i]} on the CPU`);
        }

        const prior = r.normals(dim);
        const dwCpu = prior.slice();
        const bCpu = rmsNormBackward(x, w, rstdCpu, dy, { dweight: dwCpu });
        const dwDev = onDevice(prior);
        const bDev = rmsNormBackward(onDevice(x, [rows, dim]), onDevice(w), onDevice(rstdCpu), onDevice(dy, [rows, dim]), { dweight: dwDev });
        const dxCpu = bCpu.dx as Float32Array, dxDev = values(bDev.dx as Tensor);
        for (let row = 0; row < rows; row++) {
          const R = rstdCpu[row];
          let dotAbs = 0;
          for (let i = 0; i < dim; i++) dotAbs += Math.abs(dy[row * dim + i] * w[i] * x[row * dim + i] * R);
          for (let i = 0; i < dim; i++) {
            const at = row * dim + i;
            const mag = R * (Math.abs(dy[at] * w[i]) + Math.abs(x[at] * R) * dotAbs / dim);
            const bound = (sumRel + 8 * u) * mag + 1e-38;
            if (!(Math.abs(dxDev[at] - dxCpu[at]) <= bound))
              assert.fail(`dx ${label}[${row}][${i}] = ${dxDev[at]} on ${TEST_DEVICE}, ${dxCpu[at]} on the CPU (> ${bound.toExponential(3)})`);
          }
        }
        const dwGot = values(dwDev);
        for (let i = 0; i < dim; i++) {
          let mag = Math.abs(prior[i]);
          for (let row = 0; row < rows; row++) mag += Math.abs(dy[row * dim + i] * x[row * dim + i] * rstdCpu[row]);
          const bound = 2 * (rows + 20) * u * mag + 1e-38;
          if (!(Math.abs(dwGot[i] - dwCpu[i]) <= bound))
            assert.fail(`dweight ${label}[${i}] = ${dwGot[i]} on ${TEST_DEVICE}, ${dwCpu[i]} on the CPU (> ${bound.toExponential(3)})`);
        }
      }
    });
  }
});
