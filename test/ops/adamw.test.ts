import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor } from '../../src/index.js';
import { adamwStep, gradSumSquares, scaleInPlace } from '../../src/ops/adamw.js';
import { adamwReferenceStep, sumSquaresReference, type AdamwHyper } from '../reference/adamw.js';
import { ON_GPU, assertClose, rng } from '../helpers.js';

const LENGTHS = [1, 7, 8, 9, 33, 4099, 100_003];

describe('adamwStep (CPU)', { skip: ON_GPU ? 'CPU-only engine leaf' : false }, () => {
  for (const weightDecay of [0, 0.1]) {
    it(`follows torch.optim.AdamW over several steps, weightDecay=${weightDecay}`, () => {
      const r = rng(`adamw wd=${weightDecay}`);
      for (const n of LENGTHS) {
        const h: AdamwHyper = { lr: r.uniform(1e-4, 3e-2), beta1: 0.9, beta2: r.next() < 0.5 ? 0.999 : 0.95, eps: 1e-8, weightDecay };
        const param = r.normals(n), expAvg = new Float32Array(n), expAvgSq = new Float32Array(n);
        const ref = { param: Float64Array.from(param), expAvg: new Float64Array(n), expAvgSq: new Float64Array(n) };
        for (let t = 1; t <= 6; t++) {
          // Mixed scales, including exact zeros (v̂ = 0: the update is 0/eps = 0).
          const grad = r.normals(n, t === 3 ? 1e-3 : 1);
          if (n > 4) grad[2] = 0;
          adamwStep(param, grad, expAvg, expAvgSq, { ...h, step: t });
          adamwReferenceStep(ref, grad, h, t);
          assertClose(expAvg, ref.expAvg, { atol: 2e-7, rtol: 2e-6 }, `n=${n} step ${t} expAvg`);
          assertClose(expAvgSq, ref.expAvgSq, { atol: 1e-12, rtol: 2e-6 }, `n=${n} step ${t} expAvgSq`);
          assertClose(param, ref.param, { atol: 2e-6, rtol: 2e-6 }, `n=${n} step ${t} param`);
        }
      }
    });
  }

  it('first step moves each weight by lr against the sign of its gradient (Adam with bias correction)', () => {
    const r = rng('adamw first step');
    const param = r.normals(64), grad = r.normals(64), lr = 0.01;
    const before = Float32Array.from(param);
    adamwStep(param, grad, new Float32Array(64), new Float32Array(64), { lr, step: 1, weightDecay: 0, eps: 1e-12 });
    assertClose(param, Array.from(before, (p, i) => p - lr * Math.sign(grad[i])), { atol: 1e-6, rtol: 0 });
  });

  it('resumes from saved state at a later step with beta1 = 0 and non-default hyperparameters', () => {
    const r = rng('adamw resume');
    const n = 1000, h: AdamwHyper = { lr: 0.05, beta1: 0, beta2: 0.5, eps: 1e-3, weightDecay: 0.5 };
    const param = r.normals(n), grad = r.normals(n);
    const expAvg = r.normals(n), expAvgSq = Float32Array.from(r.normals(n), (x) => x * x);
    const ref = { param: Float64Array.from(param), expAvg: Float64Array.from(expAvg), expAvgSq: Float64Array.from(expAvgSq) };
    adamwStep(Tensor.from(param, [10, 100]), grad, expAvg, Tensor.from(expAvgSq), { ...h, step: 17 });
    adamwReferenceStep(ref, grad, h, 17);
    assertClose(param, ref.param, { atol: 2e-6, rtol: 2e-6 }, 'param');
    assertClose(expAvg, ref.expAvg, { atol: 2e-7, rtol: 2e-6 }, 'expAvg');
    assertClose(expAvgSq, ref.expAvgSq, { atol: 1e-12, rtol: 2e-6 }, 'expAvgSq');
  });

  it('rejects bad inputs with errors naming the argument', () => {
    const f = (n: number) => new Float32Array(n);
    const ok = { lr: 1e-3, step: 1 };
    assert.throws(() => adamwStep(f(4), f(5), f(4), f(4), ok), { name: 'RangeError', message: /^grad: has 5 elements, param has 4/ });
    assert.throws(() => adamwStep(f(4), f(4), f(4), f(3), ok), { name: 'RangeError', message: /^expAvgSq: / });
    assert.throws(() => adamwStep(new Float64Array(4) as never, f(4), f(4), f(4), ok), { name: 'TypeError', message: /^param: / });
    assert.throws(() => adamwStep(f(4), Tensor.from(new Int32Array(4)) as never, f(4), f(4), ok), { name: 'TypeError', message: /^grad: expected dtype f32/ });
    assert.throws(() => adamwStep(f(4), f(4), f(4), f(4), { step: 1 } as never), { name: 'TypeError', message: /^lr: required/ });
    assert.throws(() => adamwStep(f(4), f(4), f(4), f(4), { lr: 1e-3 } as never), { name: 'TypeError', message: /^step: required/ });
    assert.throws(() => adamwStep(f(4), f(4), f(4), f(4), { lr: 1e-3, step: 0 }), { name: 'RangeError', message: /^step: / });
    assert.throws(() => adamwStep(f(4), f(4), f(4), f(4), { lr: 1e-3, step: 1.5 }), { name: 'RangeError', message: /^step: / });
    assert.throws(() => adamwStep(f(4), f(4), f(4), f(4), { ...ok, beta1: 1 }), { name: 'RangeError', message: /^beta1: / });
    assert.throws(() => adamwStep(f(4), f(4), f(4), f(4), { ...ok, beta2: -0.1 }), { name: 'RangeError', message: /^beta2: / });
    assert.throws(() => adamwStep(f(4), f(4), f(4), f(4), { ...ok, eps: 0 }), { name: 'RangeError', message: /^eps: / });
    assert.throws(() => adamwStep(f(4), f(4), f(4), f(4), { ...ok, weightDecay: -1 }), { name: 'RangeError', message: /^weightDecay: / });
    assert.throws(() => adamwStep(f(4), f(4), f(4), f(4), { ...ok, lr: Infinity }), { name: 'TypeError', message: /^lr: / });
    const shared = f(8);
    assert.throws(() => adamwStep(shared.subarray(0, 4), f(4), shared.subarray(3, 7), f(4), ok),
      { name: 'RangeError', message: /^expAvg: must not share memory with param/ });
  });
});

describe('gradSumSquares and scaleInPlace (CPU)', { skip: ON_GPU ? 'CPU-only engine leaf' : false }, () => {
  it('gradSumSquares matches the float64 sum, across chunk boundaries', () => {
    const r = rng('gradSumSquares');
    for (const n of [0, 1, 15, 16, 17, 65_535, 65_536, 65_537, 200_003]) {
      const x = r.normals(n, r.uniform(0.1, 100));
      assertClose(gradSumSquares(x), sumSquaresReference(x), { atol: 0, rtol: 1e-12 }, `n=${n}`);
    }
    assert.equal(gradSumSquares(Tensor.from(new Float32Array([3, 4, 0, 0]), [2, 2])), 25);
  });

  it('gradSumSquares does not overflow for f32-max values, and reports NaN and Inf', () => {
    const big = new Float32Array(1000).fill(3e38);
    assertClose(gradSumSquares(big), 1000 * Math.fround(3e38) ** 2, { atol: 0, rtol: 1e-12 });
    const x = new Float32Array(70_000).fill(1);
    x[66_000] = NaN;
    assert.ok(Number.isNaN(gradSumSquares(x)));
    x[66_000] = -Infinity;
    assert.equal(gradSumSquares(x), Infinity);
  });

  it('scaleInPlace multiplies in f32', () => {
    const r = rng('scaleInPlace');
    for (const n of [0, 1, 7, 8, 9, 100_003]) {
      const x = r.normals(n), before = Float32Array.from(x), c = r.uniform(-2, 2);
      scaleInPlace(x, c);
      // A product of two f32 values is exact in double, so fround gives the f32 product.
      assert.deepEqual(Array.from(x), Array.from(before, (v) => Math.fround(v * Math.fround(c))), `n=${n}`);
    }
    assert.throws(() => scaleInPlace(new Float32Array(2), NaN), { name: 'TypeError', message: /^c: / });
    assert.throws(() => scaleInPlace([1, 2] as never, 2), { name: 'TypeError', message: /^x: / });
  });
});
