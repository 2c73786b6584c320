// The tolerance check every numeric test leans on: it must fail whenever a value is not
// the expected one, NaN and infinities on either side included.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertClose } from './helpers.js';

test('assertClose passes values within tolerance and equal infinities', () => {
  assertClose([1, 2.000001, -3], [1, 2, -3]);
  assertClose([Infinity, -Infinity], [Infinity, -Infinity]);
  assertClose(0.5, 0.5 + 1e-7);
});

test('assertClose fails when the expected value is NaN or infinite and the actual one is not', () => {
  assert.throws(() => assertClose([1, 2], [1, NaN]), /\[1\] is 2.*expected NaN/);
  assert.throws(() => assertClose(3, Infinity), /expected Infinity/);
  assert.throws(() => assertClose([Infinity], [-Infinity]), /expected -Infinity/);
});

test('assertClose fails on a NaN or an infinity that was not expected, and on values out of tolerance', () => {
  assert.throws(() => assertClose([NaN], [0]), /is NaN/);
  // Not even against a NaN reference: a NaN is never a result a test can vouch for.
  assert.throws(() => assertClose([NaN], [NaN]), /is NaN/);
  assert.throws(() => assertClose([Infinity], [1e30]), /is Infinity/);
  assert.throws(() => assertClose([1.1], [1], { atol: 0.01, rtol: 0 }), /\[0\] = 1.1, expected 1/);
  assert.throws(() => assertClose([1, 2], [1]), /length/);
});
