import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor } from '../../src/index.js';
import { swigluBackward, swigluForward } from '../../src/ops/swiglu.js';
import { swigluBackwardReference, swigluReference } from '../reference/swiglu.js';
import { ON_GPU, TEST_DEVICE, assertClose, dot, fdCheck, onDevice, rng, values, type Rng } from '../helpers.js';
import { hashInChild, here } from './thread_determinism.js';

/** Gates spanning the whole range, including saturated ones where σ over/underflows. */
function gates(r: Rng, n: number): Float32Array {
  const g = r.normals(n, 3);
  for (let i = 0; i < n; i += 11) g[i] = r.uniform(-120, 120);
  return g;
}

describe(`swiglu (engine leaf) on ${TEST_DEVICE}`, () => {
  it('forward and backward match the float64 reference on awkward shapes', () => {
    const r = rng('swiglu');
    for (const [rows, inter] of [[1, 1], [3, 7], [5, 13], [17, 61], [4, 4864 + 3]]) {
      const n = rows * inter;
      const g = gates(r, n), u = r.normals(n), dh = r.normals(n);
      const gt = onDevice(g, [rows, inter]), ut = onDevice(u, [rows, inter]);
      const h = swigluForward(gt, ut);
      assert.deepEqual(h.shape, [rows, inter]);
      assert.equal(h.device, TEST_DEVICE);
      assertClose(values(h), swigluReference(g, u), { atol: 1e-6, rtol: 2e-6 }, `h ${rows}x${inter}`);
      const grads = swigluBackward(gt, ut, onDevice(dh, [rows, inter]));
      const ref = swigluBackwardReference(g, u, dh);
      assertClose(values(grads.dgate), ref.dgate, { atol: 1e-6, rtol: 2e-6 }, `dgate ${rows}x${inter}`);
      assertClose(values(grads.dup), ref.dup, { atol: 1e-6, rtol: 2e-6 }, `dup ${rows}x${inter}`);
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
    const gt = onDevice(g), ut = onDevice(u), dht = onDevice(dh);
    const run = () => {
      const b = swigluBackward(gt, ut, dht);
      return [swigluForward(gt, ut), b.dgate, b.dup].map((t) => values(t));
    };
    assert.deepEqual(run(), run());
    if (ON_GPU) return;  // the rest is about the CPU twin's thread count
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
    it('rejects inputs on different devices', () => {
      const g = onDevice(new Float32Array(6));
      assert.throws(() => swigluForward(g, new Float32Array(6)), { name: 'TypeError', message: /^up: is on cpu/ });
      assert.throws(() => swigluBackward(g, g, new Float32Array(6)), { name: 'TypeError', message: /^dh: is on cpu/ });
    });

    // The twins differ only in e^x (the CPU's polynomial is within 2e-7 relative, CUDA's
    // expf within 2 ulp), which moves σ by at most ~5e-7·σ; the rest is the same
    // sequence of roundings. Allowed, per element, 2e-6 times the size of what σ
    // multiplies: |g·u|·σ for h, |d·g|·σ for dup, and for dgate, whose
    // σ(1 + g(1 − σ)) cancels near g ≈ −1.28, |d·u|·σ·(1 + 2|g|). Saturated gates
    // (|g| > 88) may differ by subnormals, hence the 1e-30 floor.
    it('matches the CPU twin on the same inputs, forward and backward', () => {
      const r = rng('swiglu twin');
      for (const n of [0, 1, 7, 255, 256, 257, 4867, 70001]) {
        const g = gates(r, n), u = r.normals(n), d = r.normals(n);
        const hCpu = swigluForward(g, u), bCpu = swigluBackward(g, u, d);
        const gt = onDevice(g), ut = onDevice(u);
        const hDev = values(swigluForward(gt, ut)), bDev = swigluBackward(gt, ut, onDevice(d));
        const dgDev = values(bDev.dgate), duDev = values(bDev.dup);
        const eps = 2e-6, floor = 1e-30;
        for (let i = 0; i < n; i++) {
          const sig = 1 / (1 + Math.exp(-g[i]));
          const within = (got: number, want: number, scale: number, what: string) => {
            if (!(Math.abs(got - want) <= eps * scale + floor))
              assert.fail(`${what}[${i}] (g = ${g[i]}) = ${got} on ${TEST_DEVICE}, ${want} on the CPU`);
          };
          within(hDev[i], hCpu[i], Math.abs(g[i] * u[i]) * sig, `h n=${n}`);
          within(duDev[i], bCpu.dup[i], Math.abs(d[i] * g[i]) * sig, `dup n=${n}`);
          within(dgDev[i], bCpu.dgate[i], Math.abs(d[i] * u[i]) * sig * (1 + 2 * Math.abs(g[i])), `dgate n=${n}`);
        }
      }
    });
  }
});

describe(`swiglu on ${TEST_DEVICE}: bits independent of the array length`, () => {
  it('gives each element the same bits in a long array and in a short one', () => {
    const r = rng('swiglu-length');
    const n = 61; // not a multiple of 8: the tail must take the same path as the body
    const g = r.normals(n, 3), u = r.normals(n, 3);
    const whole = values(swigluForward(onDevice(g), onDevice(u)));
    for (const start of [0, 5, 56]) {
      const part = values(swigluForward(onDevice(g.slice(start, start + 5)), onDevice(u.slice(start, start + 5))));
      assert.deepEqual(Array.from(part), Array.from(whole.slice(start, start + 5)), `elements ${start}..${start + 4}`);
    }
  });
});
