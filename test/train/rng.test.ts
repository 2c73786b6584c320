// The trainer's generator: the published xoshiro128** algorithm (checked against a C
// implementation), deterministic per seed, resumable from its JSON state, unbiased ints.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, checkRngState } from '../../src/train/rng.js';

// First six outputs for three seeds, from a C implementation of xoshiro128** with the same
// splitmix32 seeding (uint32 arithmetic in C, so the JS Math.imul/>>> translation is what is tested).
const REFERENCE: Array<[number, number[]]> = [
  [0, [3809008728, 1133695204, 53579671, 2891528803, 139681546, 2203266335]],
  [42, [2837322924, 544945897, 479756282, 3500138142, 339756180, 113173290]],
  [4294967295, [835879718, 1921286648, 2356205009, 1885780724, 980451116, 1053911718]],
];

test('matches the C reference', () => {
  for (const [seed, expected] of REFERENCE) {
    const rng = new Rng(seed);
    assert.deepEqual(expected.map(() => rng.nextUint32()), expected, `seed ${seed}`);
  }
});

test('same seed, same stream; other seeds, other streams', () => {
  const draw = (seed: number) => {
    const r = new Rng(seed);
    return Array.from({ length: 100 }, () => r.nextUint32());
  };
  assert.deepEqual(draw(123), draw(123));
  const streams = new Set([0, 1, 2, 123, 2 ** 31].map((s) => draw(s).join(',')));
  assert.equal(streams.size, 5);
  assert.throws(() => new Rng(-1), /seed/);
  assert.throws(() => new Rng(2 ** 32), /seed/);
  assert.throws(() => new Rng(1.5), /seed/);
});

test('state round trip through JSON continues the same stream', () => {
  const a = new Rng(777);
  for (let i = 0; i < 1000; i++) a.next();
  const saved = JSON.parse(JSON.stringify(a.getState()));
  const b = Rng.fromState(saved);
  for (let i = 0; i < 200; i++) {
    assert.equal(b.nextUint32(), a.nextUint32());
    assert.equal(b.int(1000), a.int(1000));
    assert.equal(b.next(), a.next());
  }
  const c = a.clone();
  assert.deepEqual(c.permutation(50), a.permutation(50));
  // Bad states are refused, naming what is wrong.
  assert.throws(() => Rng.fromState({ algorithm: 'xoshiro128**', state: [0, 0, 0, 0] }), /all-zero/);
  assert.throws(() => checkRngState({ algorithm: 'pcg', state: [1, 2, 3, 4] }, 'r'), /^TypeError: r\.algorithm/);
  assert.throws(() => checkRngState({ algorithm: 'xoshiro128**', state: [1, 2, 3] }, 'r'), /r\.state/);
  assert.throws(() => checkRngState({ algorithm: 'xoshiro128**', state: [1, 2, 3, 2 ** 32] }, 'r'), /r\.state/);
  assert.throws(() => checkRngState(null, 'r'), /^TypeError: r:/);
});

test('next() is in [0, 1); int(n) covers [0, n) evenly; shuffle permutes', () => {
  const rng = new Rng(5);
  let lo = 1;
  let hi = 0;
  for (let i = 0; i < 20000; i++) {
    const u = rng.next();
    assert.ok(u >= 0 && u < 1);
    lo = Math.min(lo, u);
    hi = Math.max(hi, u);
  }
  assert.ok(lo < 0.001 && hi > 0.999);

  // χ² over 7 buckets (6 degrees of freedom): 0.1% critical value 22.46. The seed is
  // fixed, so this is a deterministic check that int() is not grossly biased.
  const n = 7;
  const draws = 70000;
  const counts = new Array<number>(n).fill(0);
  for (let i = 0; i < draws; i++) {
    const k = rng.int(n);
    assert.ok(Number.isInteger(k) && k >= 0 && k < n);
    counts[k]++;
  }
  const expected = draws / n;
  const chi2 = counts.reduce((s, c) => s + (c - expected) ** 2 / expected, 0);
  assert.ok(chi2 < 22.46, `chi2 ${chi2} counts ${counts}`);
  assert.equal(rng.int(1), 0);
  const big = rng.int(2 ** 32);
  assert.ok(Number.isInteger(big) && big >= 0 && big < 2 ** 32);
  assert.throws(() => rng.int(0), /n:/);

  const p = rng.permutation(101);
  assert.deepEqual([...p].sort((a, b) => a - b), Array.from({ length: 101 }, (_, i) => i));
  assert.notDeepEqual(p, Array.from({ length: 101 }, (_, i) => i));
});

test('fork() gives an independent stream and advances the parent by exactly one draw', () => {
  const parent = new Rng(9);
  const twin = parent.clone();
  const child = parent.fork();
  twin.nextUint32();
  assert.equal(parent.nextUint32(), twin.nextUint32());
  const c = Array.from({ length: 20 }, () => child.nextUint32());
  const q = Array.from({ length: 20 }, () => parent.nextUint32());
  assert.notDeepEqual(c, q);
});
