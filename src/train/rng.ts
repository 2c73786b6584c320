// The trainer's random numbers: xoshiro128** (Blackman and Vigna), four uint32 words of
// state, seeded through splitmix32. Small enough to live in trainer_state.json as JSON, so
// a resumed run draws exactly the numbers an uninterrupted run would have drawn: data
// order, sampling seeds handed to the engine, anything else the trainer randomises.
//
// Math.random and crypto are deliberately not used anywhere in a run: neither can be
// seeded nor saved.

export const RNG_ALGORITHM = 'xoshiro128**';

export interface RngState {
  algorithm: typeof RNG_ALGORITHM;
  /** The four state words, each an integer in [0, 2^32); not all zero. */
  state: [number, number, number, number];
}

const TWO_32 = 4294967296;

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** splitmix32's output function: a bijective avalanche of a uint32 (Murmur3's fmix32 with a Weyl step). */
function splitmix32(x: number): number {
  let z = x >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

function isUint32(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < TWO_32;
}

/** Validates a serialised RNG state (as read from JSON); errors start with `name`. */
export function checkRngState(value: unknown, name = 'rng'): RngState {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new TypeError(`${name}: expected {algorithm, state}, got ${JSON.stringify(value)}`);
  const { algorithm, state } = value as Record<string, unknown>;
  if (algorithm !== RNG_ALGORITHM)
    throw new TypeError(`${name}.algorithm: expected ${JSON.stringify(RNG_ALGORITHM)}, got ${JSON.stringify(algorithm)}`);
  if (!Array.isArray(state) || state.length !== 4 || !state.every(isUint32))
    throw new TypeError(`${name}.state: expected 4 integers in [0, 2^32), got ${JSON.stringify(state)}`);
  if (state.every((w) => w === 0)) throw new RangeError(`${name}.state: all-zero state (xoshiro never leaves it)`);
  return { algorithm: RNG_ALGORITHM, state: [state[0], state[1], state[2], state[3]] };
}

export class Rng {
  #s: Uint32Array;

  /** seed: an integer in [0, 2^32). Different seeds give unrelated streams. */
  constructor(seed: number) {
    if (!isUint32(seed)) throw new RangeError(`seed: expected an integer in [0, 2^32), got ${seed}`);
    this.#s = new Uint32Array(4);
    let x = seed;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      this.#s[i] = splitmix32(x);
    }
    // splitmix32 is a bijection of x, so four consecutive outputs cannot all be zero; kept
    // as a guard because an all-zero xoshiro state would emit zeros forever.
    if (this.#s.every((w) => w === 0)) this.#s[0] = 1;
  }

  static fromState(state: RngState | unknown, name = 'rng'): Rng {
    const checked = checkRngState(state, name);
    const rng = new Rng(0);
    rng.#s.set(checked.state);
    return rng;
  }

  /** A JSON-serialisable copy of the state; Rng.fromState(getState()) continues the same stream. */
  getState(): RngState {
    return { algorithm: RNG_ALGORITHM, state: [this.#s[0], this.#s[1], this.#s[2], this.#s[3]] };
  }

  clone(): Rng {
    return Rng.fromState(this.getState());
  }

  /** The next uint32 (xoshiro128**). */
  nextUint32(): number {
    const s = this.#s;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  next(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform integer in [0, n), n an integer in [1, 2^32]; unbiased (rejection of the short last bucket). */
  int(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > TWO_32) throw new RangeError(`n: expected an integer in [1, 2^32], got ${n}`);
    // Values at or above `limit` would make the low residues more likely; draw again.
    const limit = TWO_32 - (TWO_32 % n);
    for (;;) {
      const u = this.nextUint32();
      if (u < limit) return u % n;
    }
  }

  /** Fisher–Yates shuffle in place; returns the array. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = items[i];
      items[i] = items[j];
      items[j] = tmp;
    }
    return items;
  }

  /** A random permutation of 0 .. n-1. */
  permutation(n: number): number[] {
    return this.shuffle(Array.from({ length: n }, (_, i) => i));
  }

  /**
   * An independent generator seeded from this one (advances this one by one draw). Use it
   * to give each consumer (data order, sampling) its own stream, so adding draws to one
   * never shifts the numbers another sees.
   */
  fork(): Rng {
    return new Rng(this.nextUint32());
  }
}
