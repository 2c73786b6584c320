// Small deterministic randomness for data: counter-based, so the i-th example can be produced
// without replaying the first i-1 (resume = store an index). Not for anything statistical
// beyond picking problems and shuffling.

/** Mixes any number of 32-bit integers into one (murmur3 finaliser between rounds). */
export function hash32(...values: number[]): number {
  let h = 0x9e3779b9;
  for (const v of values) {
    h = Math.imul(h ^ (v >>> 0), 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
    // Fold in the high part of large integers (indices past 2^32, negative seeds).
    const hi = Math.floor(v / 4294967296) >>> 0;
    if (hi !== 0) h = hash32Step(h, hi);
  }
  return h >>> 0;
}

function hash32Step(h: number, v: number): number {
  h = Math.imul(h ^ v, 0xcc9e2d51);
  h = (h << 15) | (h >>> 17);
  return Math.imul(h, 0x1b873593) >>> 0;
}

/** FNV-1a over UTF-16 code units, then finalised: a stable hash of a string. */
export function stringHash32(s: string, salt = 0): number {
  let h = 0x811c9dc5 ^ salt;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return hash32(h);
}

/** mulberry32: a 32-bit state generator returning floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Uniform integer in [lo, hi] (inclusive). */
export function randInt(rng: () => number, lo: number, hi: number): number {
  return lo + Math.floor(rng() * (hi - lo + 1));
}

/** A Fisher–Yates permutation of 0..n-1 determined by seed. */
export function permutation(n: number, seed: number): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  const rng = mulberry32(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    const t = p[i]; p[i] = p[j]; p[j] = t;
  }
  return p;
}

export function checkSeed(name: string, seed: number): void {
  if (!Number.isSafeInteger(seed)) throw new TypeError(`${name}: expected an integer seed, got ${seed}`);
}

export function checkCount(name: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${name}: expected a non-negative integer, got ${n}`);
}
