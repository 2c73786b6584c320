import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor } from '../../src/index.js';
import { adamwStep, gradSumSquares, scaleInPlace } from '../../src/ops/adamw.js';
import { addon } from '../../src/native.js';
import { adamwReferenceStep, sumSquaresReference, type AdamwHyper } from '../reference/adamw.js';
import { ON_GPU, TEST_DEVICE, assertClose, onDevice, rng, values } from '../helpers.js';

const LENGTHS = [1, 7, 8, 9, 33, 4099, 100_003];

describe(`adamwStep on ${TEST_DEVICE}`, () => {
  for (const weightDecay of [0, 0.1]) {
    it(`follows torch.optim.AdamW over several steps, weightDecay=${weightDecay}`, () => {
      const r = rng(`adamw wd=${weightDecay}`);
      for (const n of LENGTHS) {
        const h: AdamwHyper = { lr: r.uniform(1e-4, 3e-2), beta1: 0.9, beta2: r.next() < 0.5 ? 0.999 : 0.95, eps: 1e-8, weightDecay };
        const p0 = r.normals(n);
        const param = onDevice(p0), expAvg = onDevice(new Float32Array(n)), expAvgSq = onDevice(new Float32Array(n));
        const ref = { param: Float64Array.from(p0), expAvg: new Float64Array(n), expAvgSq: new Float64Array(n) };
        for (let t = 1; t <= 6; t++) {
          // Mixed scales, including exact zeros (v̂ = 0: the update is 0/eps = 0).
          const grad = r.normals(n, t === 3 ? 1e-3 : 1);
          if (n > 4) grad[2] = 0;
          adamwStep(param, onDevice(grad), expAvg, expAvgSq, { ...h, step: t });
          adamwReferenceStep(ref, grad, h, t);
          assertClose(values(expAvg), ref.expAvg, { atol: 2e-7, rtol: 2e-6 }, `n=${n} step ${t} expAvg`);
          assertClose(values(expAvgSq), ref.expAvgSq, { atol: 1e-12, rtol: 2e-6 }, `n=${n} step ${t} expAvgSq`);
          assertClose(values(param), ref.param, { atol: 2e-6, rtol: 2e-6 }, `n=${n} step ${t} param`);
        }
      }
    });
  }

  it('first step moves each weight by lr against the sign of its gradient (Adam with bias correction)', () => {
    const r = rng('adamw first step');
    const before = r.normals(64), grad = r.normals(64), lr = 0.01;
    const param = onDevice(before.slice());
    adamwStep(param, onDevice(grad), onDevice(new Float32Array(64)), onDevice(new Float32Array(64)), { lr, step: 1, weightDecay: 0, eps: 1e-12 });
    assertClose(values(param), Array.from(before, (p, i) => p - lr * Math.sign(grad[i])), { atol: 1e-6, rtol: 0 });
  });

  it('resumes from saved state at a later step with beta1 = 0 and non-default hyperparameters', () => {
    const r = rng('adamw resume');
    const n = 1000, h: AdamwHyper = { lr: 0.05, beta1: 0, beta2: 0.5, eps: 1e-3, weightDecay: 0.5 };
    const param = r.normals(n), grad = r.normals(n);
    const expAvg = r.normals(n), expAvgSq = Float32Array.from(r.normals(n), (x) => x * x);
    const ref = { param: Float64Array.from(param), expAvg: Float64Array.from(expAvg), expAvgSq: Float64Array.from(expAvgSq) };
    const pt = onDevice(param, [10, 100]), mt = onDevice(expAvg), vt = onDevice(expAvgSq);
    adamwStep(pt, onDevice(grad), ON_GPU ? mt : expAvg, vt, { ...h, step: 17 });  // a Float32Array too, on the CPU
    adamwReferenceStep(ref, grad, h, 17);
    assertClose(values(pt), ref.param, { atol: 2e-6, rtol: 2e-6 }, 'param');
    assertClose(values(mt), ref.expAvg, { atol: 2e-7, rtol: 2e-6 }, 'expAvg');
    assertClose(values(vt), ref.expAvgSq, { atol: 1e-12, rtol: 2e-6 }, 'expAvgSq');
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
    if (ON_GPU) {
      const d = (n: number) => onDevice(f(n));
      assert.throws(() => adamwStep(d(4), f(4), d(4), d(4), ok), { name: 'TypeError', message: new RegExp(`^grad: is on cpu but param is on ${TEST_DEVICE}`) });
      assert.throws(() => addon().adamwStep(d(4), d(4), d(4), Tensor.from(f(4)), { ...ok, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 }),
        { name: 'TypeError', message: /^expAvgSq: is on cpu/ });
      const t = d(4);
      assert.throws(() => adamwStep(t, d(4), t, d(4), ok), { name: 'RangeError', message: /^expAvg: must not share memory with param/ });
    }
  });
});

describe(`gradSumSquares and scaleInPlace on ${TEST_DEVICE}`, () => {
  it('gradSumSquares matches the float64 sum, across chunk boundaries', () => {
    const r = rng('gradSumSquares');
    for (const n of [0, 1, 15, 16, 17, 65_535, 65_536, 65_537, 200_003]) {
      const x = r.normals(n, r.uniform(0.1, 100));
      assertClose(gradSumSquares(onDevice(x)), sumSquaresReference(x), { atol: 0, rtol: 1e-12 }, `n=${n}`);
    }
    assert.equal(gradSumSquares(onDevice(new Float32Array([3, 4, 0, 0]), [2, 2])), 25);
  });

  it('gradSumSquares does not overflow for f32-max values, and reports NaN and Inf', () => {
    const big = new Float32Array(1000).fill(3e38);
    assertClose(gradSumSquares(onDevice(big)), 1000 * Math.fround(3e38) ** 2, { atol: 0, rtol: 1e-12 });
    const x = new Float32Array(70_000).fill(1);
    x[66_000] = NaN;
    assert.ok(Number.isNaN(gradSumSquares(onDevice(x))));
    x[66_000] = -Infinity;
    assert.equal(gradSumSquares(onDevice(x)), Infinity);
  });

  it('scaleInPlace multiplies in f32', () => {
    const r = rng('scaleInPlace');
    for (const n of [0, 1, 7, 8, 9, 100_003]) {
      const before = r.normals(n), x = onDevice(before.slice()), c = r.uniform(-2, 2);
      scaleInPlace(x, c);
      // A product of two f32 values is exact in double, so fround gives the f32 product.
      assert.deepEqual(Array.from(values(x)), Array.from(before, (v) => Math.fround(v * Math.fround(c))), `n=${n}`);
    }
    assert.throws(() => scaleInPlace(new Float32Array(2), NaN), { name: 'TypeError', message: /^c: / });
    assert.throws(() => scaleInPlace([1, 2] as never, 2), { name: 'TypeError', message: /^x: / });
  });
});

if (ON_GPU) {
  // Both twins take the step's scalars from one function and do the same f32 operations
  // in the same order (explicit fused multiply-adds, IEEE sqrt and division), and the sum
  // of squares uses the same chunks, lanes and folds: the bits must agree exactly.
  describe(`optimiser leaves: ${TEST_DEVICE} matches the CPU twin bit for bit`, () => {
    it('adamwStep over several steps, gradSumSquares and scaleInPlace', () => {
      const r = rng('adamw twin');
      for (const n of [0, 1, 7, 255, 256, 257, 65_537, 140_001]) {
        const h = { lr: r.uniform(1e-4, 3e-2), beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
        const p0 = r.normals(n), m0 = r.normals(n, 0.1), v0 = Float32Array.from(r.normals(n, 0.1), (x) => x * x);
        const cpu = { p: p0.slice(), m: m0.slice(), v: v0.slice() };
        const dev = { p: onDevice(p0), m: onDevice(m0), v: onDevice(v0) };
        for (let step = 5; step <= 8; step++) {
          const g = r.normals(n, step === 6 ? 1e-3 : 1);
          if (n > 3) g[3] = 0;
          adamwStep(cpu.p, g, cpu.m, cpu.v, { ...h, step });
          adamwStep(dev.p, onDevice(g), dev.m, dev.v, { ...h, step });
          assertClose(values(dev.p), cpu.p, { atol: 0, rtol: 0 }, `param n=${n} step ${step}`);
          assertClose(values(dev.m), cpu.m, { atol: 0, rtol: 0 }, `expAvg n=${n} step ${step}`);
          assertClose(values(dev.v), cpu.v, { atol: 0, rtol: 0 }, `expAvgSq n=${n} step ${step}`);
        }
        const x = r.normals(n, r.uniform(0.01, 100));
        const want = gradSumSquares(x), got = gradSumSquares(onDevice(x));
        assert.ok(Number.isFinite(got) && Object.is(got, want), `gradSumSquares n=${n}: ${got} on ${TEST_DEVICE}, ${want} on the CPU`);
        const c = r.uniform(-3, 3), xd = onDevice(x);
        scaleInPlace(x, c);
        scaleInPlace(xd, c);
        assertClose(values(xd), x, { atol: 0, rtol: 0 }, `scaleInPlace n=${n}`);
      }
    });
  });
}
