import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor, groupAdvantages } from '../../src/index.js';
import { groupAdvantagesReference } from '../reference/group_advantages.js';
import { ON_GPU, TEST_DEVICE, assertClose, onDevice, rng, values } from '../helpers.js';

const MODES = ['std', 'mean', 'batch', 'rloo'] as const;

/** Ragged groups in shuffled row order, including groups of one and all-equal groups. */
function raggedBatch(r: ReturnType<typeof rng>, groups: number) {
  const ids: number[] = [], rewards: number[] = [];
  for (let g = 0; g < groups; g++) {
    const size = r.int(1, 9);
    const equal = r.next() < 0.2;
    const binary = r.next() < 0.5;
    for (let k = 0; k < size; k++) {
      ids.push(g);
      rewards.push(equal ? 0.5 : binary ? r.int(0, 2) : r.normal() * 3);
    }
  }
  const order = r.shuffle(ids.map((_, i) => i));
  return {
    ids: Int32Array.from(order.map((i) => ids[i])),
    rewards: Float32Array.from(order.map((i) => rewards[i])),
  };
}

describe(`groupAdvantages on ${TEST_DEVICE}`, () => {
  for (const mode of MODES) {
    for (const std of ['unbiased', 'population'] as const) {
      it(`matches the float64 reference: mode=${mode}, std=${std}, ragged shuffled groups`, () => {
        const r = rng('groupAdvantages');
        for (let trial = 0; trial < 5; trial++) {
          const groups = r.int(1, 40);
          const { ids, rewards } = raggedBatch(r, groups);
          const out = groupAdvantages(onDevice(rewards), onDevice(ids), { mode, std, groups });
          const ref = groupAdvantagesReference(rewards, ids, groups, mode, 1e-6, std === 'unbiased');
          assertClose(values(out.advantages), ref.advantages, { atol: 2e-5, rtol: 2e-5 }, 'advantages');
          assertClose(values(out.groupMean), ref.mean, { atol: 1e-5, rtol: 1e-5 }, 'groupMean');
          assertClose(values(out.groupStd), ref.std, { atol: 1e-5, rtol: 1e-5 }, 'groupStd');
          assert.deepEqual(Array.from(values(out.degenerate)), ref.degenerate.map(Number));
        }
      });
    }
  }

  it('gives zero advantages to groups of one and all-equal groups, and flags them', () => {
    const out = groupAdvantages(onDevice(new Float32Array([2, 1, 1, 1, 0, 1])), onDevice(new Int32Array([0, 1, 1, 1, 2, 2])), { groups: 3 });
    assert.deepEqual(Array.from(values(out.advantages)).slice(0, 4), [0, 0, 0, 0]);
    assert.deepEqual(Array.from(values(out.degenerate)), [1, 1, 0]);
  });

  it('keeps rows of a group together wherever they sit in the batch', () => {
    const a = groupAdvantages(onDevice(new Float32Array([1, 0, 5, 3])), onDevice(new Int32Array([0, 0, 1, 1])), { groups: 2 });
    const b = groupAdvantages(onDevice(new Float32Array([1, 5, 0, 3])), onDevice(new Int32Array([0, 1, 0, 1])), { groups: 2 });
    const va = values(a.advantages), vb = values(b.advantages);
    assertClose([vb[0], vb[2], vb[1], vb[3]], va, { atol: 0, rtol: 0 });
  });

  it('handles an empty batch', () => {
    const out = groupAdvantages(onDevice(new Float32Array(0)), onDevice(new Int32Array(0)), { groups: 0 });
    assert.equal(values(out.advantages).length, 0);
  });

  it('rejects non-finite rewards and ids outside [0, groups) with the same words on every device', () => {
    const cases: Array<[number[], number[], RegExp]> = [
      [[1, NaN, 2], [0, 0, 1], /^rewards: element 1 is NaN; inputs must be finite$/],
      [[1, 2, Infinity], [0, 0, 1], /^rewards: element 2 is Infinity; inputs must be finite$/],
      [[-Infinity, 2, 3], [0, 0, 1], /^rewards: element 0 is -Infinity; inputs must be finite$/],
      [[1, 2, 3], [0, 5, 1], /^groupIds: group id 5 at index 1 is outside \[0, 2\)$/],
      [[1, NaN, 3], [0, 5, 1], /^groupIds: group id 5 at index 1 is outside \[0, 2\)$/],  // ids before rewards
    ];
    for (const [rewards, ids, message] of cases) {
      for (const place of [(a: Float32Array | Int32Array) => Tensor.from(a), (a: Float32Array | Int32Array) => onDevice(a)]) {
        assert.throws(() => groupAdvantages(place(Float32Array.from(rewards)), place(Int32Array.from(ids)), { groups: 2 }),
          (e: Error) => e instanceof RangeError && message.test(e.message), `rewards ${rewards}, ids ${ids}`);
      }
    }
  });

  if (!ON_GPU) {
    it('returns TypedArrays for TypedArray inputs and Tensors for Tensor inputs', () => {
      const plain = groupAdvantages(new Float32Array([1, 2]), new Int32Array([0, 0]));
      assert.ok(plain.advantages instanceof Float32Array);
      const wrapped = groupAdvantages(Tensor.from(new Float32Array([1, 2])), new Int32Array([0, 0]));
      assert.ok(wrapped.advantages instanceof Tensor);
    });

    it('rejects bad input with errors that name the argument', () => {
      assert.throws(() => groupAdvantages(new Float32Array([1, NaN]), new Int32Array([0, 0])), /rewards: element 1 is NaN/);
      assert.throws(() => groupAdvantages(new Float32Array([1, 2]), new Int32Array([0])), /groupIds: length 1 does not fit shape \[2\]/);
      assert.throws(() => groupAdvantages(new Float32Array([1, 2]), new Int32Array([0, -1])), RangeError);
      assert.throws(() => groupAdvantages(new Float32Array([1, 2]), new Int32Array([0, 3]), { groups: 2 }), /groupIds: group id 3 at index 1/);
      assert.throws(() => groupAdvantages(new Float32Array([1, 2]), new Float32Array([0, 0])), /groupIds: expected dtype i32, got f32/);
      assert.throws(() => groupAdvantages(new Float32Array([1, 2]), new Int32Array([0, 0]), { mode: 'zscore' as never }), /mode: expected one of/);
      assert.throws(() => groupAdvantages(new Float32Array([1, 2]), new Int32Array([0, 0]), { eps: -1 }), /eps: expected >= 0/);
      assert.throws(() => groupAdvantages([1, 2] as never, new Int32Array([0, 0])), /rewards: expected a Tensor or a TypedArray/);
    });
  }
});
