// Shared test utilities: a seeded generator (fresh seed per run unless LGRPO_TEST_SEED
// is set, printed so failures can be replayed), tolerance checks that never let NaN
// pass, and the device the suite runs on (LGRPO_TEST_DEVICE=cuda:0 for `npm run test:gpu`).
import assert from 'node:assert/strict';
import { Tensor, type Device } from '../src/index.js';

export const TEST_DEVICE = (process.env.LGRPO_TEST_DEVICE ?? 'cpu') as Device;
export const ON_GPU = TEST_DEVICE !== 'cpu';

const baseSeed = process.env.LGRPO_TEST_SEED ? Number(process.env.LGRPO_TEST_SEED) : (Date.now() ^ (process.pid << 8)) >>> 0;
let seedCounter = 0;

/** A fresh deterministic generator; its seed is logged on first use in each file. */
export function rng(label = ''): Rng {
  const seed = (baseSeed + 0x9e3779b9 * ++seedCounter) >>> 0;
  if (seedCounter === 1) console.log(`# LGRPO_TEST_SEED=${baseSeed}${label ? ` (${label})` : ''}`);
  return new Rng(seed);
}

export class Rng {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0 || 1;
  }
  /** uniform in [0, 1) (mulberry32) */
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }
  int(lo: number, hiExclusive: number): number {
    return lo + Math.floor(this.next() * (hiExclusive - lo));
  }
  normal(): number {
    const u = Math.max(this.next(), 1e-12), v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  normals(n: number, scale = 1): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.normal() * scale;
    return out;
  }
  ints(n: number, lo: number, hiExclusive: number): Int32Array {
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.int(lo, hiExclusive);
    return out;
  }
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(0, i + 1);
      [items[i], items[j]] = [items[j], items[i]];
    }
    return items;
  }
}

/** |actual - expected| <= atol + rtol·|expected| elementwise; a NaN in either fails, an infinity unless both are the same. */
export function assertClose(
  actual: ArrayLike<number> | number,
  expected: ArrayLike<number> | number,
  tol: { atol?: number; rtol?: number } = {},
  label = 'value',
): void {
  const atol = tol.atol ?? 1e-5, rtol = tol.rtol ?? 1e-5;
  const a = typeof actual === 'number' ? [actual] : actual;
  const e = typeof expected === 'number' ? [expected] : expected;
  assert.equal(a.length, e.length, `${label}: length ${a.length} != expected ${e.length}`);
  let worst = -1, worstExcess = 0;
  for (let i = 0; i < a.length; i++) {
    // A NaN never passes, on either side; an infinity only against the same infinity.
    if ((!Number.isFinite(a[i]) || !Number.isFinite(e[i])) && !(a[i] === e[i])) assert.fail(`${label}[${i}] is ${a[i]} (expected ${e[i]})`);
    if (!Number.isFinite(e[i])) continue;
    const excess = Math.abs(a[i] - e[i]) - (atol + rtol * Math.abs(e[i]));
    if (excess > worstExcess) { worstExcess = excess; worst = i; }
  }
  if (worst >= 0)
    assert.fail(`${label}[${worst}] = ${a[worst]}, expected ${e[worst]} (|diff| ${Math.abs(a[worst] - e[worst]).toExponential(3)}, atol ${atol}, rtol ${rtol})`);
}

/** Moves a CPU tensor built from `array` to the test device. */
export function onDevice(array: Float32Array | Int32Array | Uint8Array | Uint16Array, shape?: number[], dtype?: 'bf16' | 'f16'): Tensor {
  const t = Tensor.from(array, shape, dtype);
  return ON_GPU ? t.to(TEST_DEVICE) : t;
}

/** A kernel output (Tensor on the test device, or a TypedArray) as CPU values. */
export function values(x: Tensor | Float32Array | Uint8Array | Int32Array): Float32Array | Uint8Array | Int32Array {
  if (!(x instanceof Tensor)) return x;
  const cpu = x.isCuda ? x.to('cpu') : x;
  return cpu.dtype === 'bf16' || cpu.dtype === 'f16' ? cpu.toFloat32() : (cpu.data as Float32Array | Uint8Array | Int32Array);
}

export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/** Central differences of f at `count` random coordinates of x against an analytic gradient. */
export function fdCheck(label: string, f: (x: Float64Array) => number, x: Float64Array, grad: ArrayLike<number>, r: Rng, count = 16): void {
  const h = 1e-5;
  for (let c = 0; c < count; c++) {
    const i = r.int(0, x.length);
    const keep = x[i];
    x[i] = keep + h;
    const up = f(x);
    x[i] = keep - h;
    const down = f(x);
    x[i] = keep;
    assertClose((up - down) / (2 * h), grad[i], { atol: 1e-7, rtol: 1e-6 }, `${label}[${i}] finite difference`);
  }
}
