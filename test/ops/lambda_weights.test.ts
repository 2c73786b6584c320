import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor, lambdaWeights } from '../../src/index.js';
import { lambdaWeightsReference } from '../reference/lambda_weights.js';
import { ON_GPU, TEST_DEVICE, assertClose, onDevice, rng, values, type Rng } from '../helpers.js';

/**
 * Ragged groups in shuffled row order: groups of one, groups of equal lengths, groups
 * holding zero-length rows, and ordinary groups of random lengths up to `maxLength`.
 */
function raggedLengths(r: Rng, groups: number, maxLength = 300) {
  const ids: number[] = [], lengths: number[] = [];
  for (let g = 0; g < groups; g++) {
    const kind = r.next();
    const size = kind < 0.15 ? 1 : r.int(2, 12);
    const equal = kind >= 0.15 && kind < 0.3 ? r.int(0, maxLength) : -1;
    for (let k = 0; k < size; k++) {
      ids.push(g);
      lengths.push(equal >= 0 ? equal : r.next() < 0.15 ? 0 : r.int(1, maxLength + 1));
    }
  }
  const order = r.shuffle(ids.map((_, i) => i));
  return {
    ids: Int32Array.from(order.map((i) => ids[i])),
    lengths: Int32Array.from(order.map((i) => lengths[i])),
  };
}

function groupSums(weights: ArrayLike<number>, ids: Int32Array, groups: number): { sums: number[]; sizes: number[] } {
  const sums = new Array(groups).fill(0), sizes = new Array(groups).fill(0);
  for (let i = 0; i < ids.length; i++) {
    sums[ids[i]] += weights[i];
    sizes[ids[i]] += 1;
  }
  return { sums, sizes };
}

describe(`lambdaWeights on ${TEST_DEVICE}`, () => {
  it('matches the float64 reference on ragged shuffled groups, for several lambda and r', () => {
    const r = rng('lambdaWeights');
    for (let trial = 0; trial < 12; trial++) {
      const groups = r.int(1, 30);
      const { ids, lengths } = raggedLengths(r, groups);
      const lambda = [0, 0.5, 1, -0.7, 2.5][trial % 5] + (trial >= 5 ? r.uniform(-1, 1) : 0);
      // r <= 0.3 keeps 1 + r z > 0 in groups of up to 11 (z >= -√10); the clamp of h has its
      // own test: clamped rows reach q = 1e-6^λ, where float64 itself loses the derivative.
      const slope = trial % 3 === 0 ? 1 / 9 : r.uniform(0.05, 0.3);
      const out = lambdaWeights(onDevice(lengths), onDevice(ids), { lambda, r: slope, groups });
      const ref = lambdaWeightsReference(lengths, ids, groups, lambda, slope);
      assertClose(values(out.weights), ref.weights, { atol: 1e-6, rtol: 2e-6 }, `weights (trial ${trial})`);
      assertClose(values(out.dWeightsDLambda), ref.dWeightsDLambda, { atol: 2e-6, rtol: 2e-5 }, `dWeightsDLambda (trial ${trial})`);
    }
  });

  it('keeps each group summing to its size', () => {
    const r = rng();
    const groups = 25;
    const { ids, lengths } = raggedLengths(r, groups);
    const out = lambdaWeights(onDevice(lengths), onDevice(ids), { lambda: 1.7, groups });
    const { sums, sizes } = groupSums(values(out.weights), ids, groups);
    assertClose(sums, sizes, { atol: 1e-5, rtol: 1e-6 }, 'group sums');
  });

  it('gives weight 1 and derivative 0 to groups of one, equal lengths (zero included) and lambda = 0', () => {
    const lengths = new Int32Array([7, 5, 5, 5, 0, 0, 3, 9, 1]);
    const ids = new Int32Array([0, 1, 1, 1, 2, 2, 3, 3, 3]);
    const out = lambdaWeights(onDevice(lengths), onDevice(ids), { lambda: 2, groups: 4 });
    const w = values(out.weights), dw = values(out.dWeightsDLambda);
    assertClose(Array.from(w).slice(0, 6), [1, 1, 1, 1, 1, 1], { atol: 1e-7, rtol: 0 }, 'weights of flat groups');
    assertClose(Array.from(dw).slice(0, 6), [0, 0, 0, 0, 0, 0], { atol: 1e-7, rtol: 0 }, 'derivatives of flat groups');
    // The ragged group does move away from 1, or this test would prove nothing.
    assert.ok(Math.abs(w[7] - 1) > 1e-3, `group 3 weights ${Array.from(w).slice(6)}`);

    const zero = lambdaWeights(onDevice(lengths), onDevice(ids), { lambda: 0, groups: 4 });
    assertClose(values(zero.weights), new Array(9).fill(1), { atol: 1e-6, rtol: 0 }, 'lambda = 0 weights');
    // λ = 0 is no fixed point of the derivative: ∂f/∂λ there is G s (ln h − mean ln h), s = 1/G.
    const ref = lambdaWeightsReference(lengths, ids, 4, 0);
    assertClose(values(zero.dWeightsDLambda), ref.dWeightsDLambda, { atol: 1e-6, rtol: 1e-5 }, 'lambda = 0 derivative');
  });

  it('floors h = 1 + r z at 1e-6 for short outliers under a steep slope', () => {
    // z of the zero-length row is -√3, so 1 + 1·z < 0 and h is clamped; the others have h = 1 + 1/√3.
    const lengths = new Int32Array([0, 100, 100, 100]), ids = new Int32Array([0, 0, 0, 0]);
    for (const lambda of [0.5, -0.3]) {
      const out = lambdaWeights(onDevice(lengths), onDevice(ids), { lambda, r: 1, groups: 1 });
      const q = [1e-6 ** lambda, ...Array(3).fill((1 + 1 / Math.sqrt(3)) ** lambda)];
      const e = q.map((x) => Math.exp(x)), total = e.reduce((a, b) => a + b, 0);
      assertClose(values(out.weights), e.map((x) => (4 * x) / total), { atol: 1e-6, rtol: 1e-6 }, `weights (lambda ${lambda})`);
      const ref = lambdaWeightsReference(lengths, ids, 1, lambda, 1);
      assertClose(values(out.dWeightsDLambda), ref.dWeightsDLambda, { atol: 1e-6, rtol: 1e-5 }, `dWeightsDLambda (lambda ${lambda})`);
    }
  });

  it('weights longer responses up for lambda > 0 and down for lambda < 0', () => {
    const lengths = new Float32Array([10, 20, 30, 40]);
    const ids = new Int32Array([0, 0, 0, 0]);
    const up = values(lambdaWeights(onDevice(lengths), onDevice(ids), { lambda: 1, groups: 1 }).weights);
    const down = values(lambdaWeights(onDevice(lengths), onDevice(ids), { lambda: -1, groups: 1 }).weights);
    for (let i = 1; i < 4; i++) {
      assert.ok(up[i] > up[i - 1], `lambda 1: ${Array.from(up)}`);
      assert.ok(down[i] < down[i - 1], `lambda -1: ${Array.from(down)}`);
    }
  });

  it('returns dWeightsDLambda matching central differences of the float64 reference in lambda', () => {
    const r = rng();
    for (let trial = 0; trial < 6; trial++) {
      const ragged = raggedLengths(r, r.int(1, 12), 200);
      // one more group of distinct lengths, so that some derivatives are far from 0
      const groups = Math.max(...ragged.ids, -1) + 2;
      const ids = Int32Array.from([...ragged.ids, ...Array(5).fill(groups - 1)]);
      const lengths = Int32Array.from([...ragged.lengths, 3, 50, 120, 7, 199]);
      const lambda = r.uniform(-2, 3), slope = r.uniform(0.05, 0.3), h = 1e-5;
      const out = lambdaWeights(onDevice(lengths), onDevice(ids), { lambda, r: slope, groups });
      const plus = lambdaWeightsReference(lengths, ids, groups, lambda + h, slope).weights;
      const minus = lambdaWeightsReference(lengths, ids, groups, lambda - h, slope).weights;
      const fd = plus.map((p, i) => (p - minus[i]) / (2 * h));
      assertClose(values(out.dWeightsDLambda), fd, { atol: 1e-5, rtol: 1e-4 }, `dWeightsDLambda vs FD (trial ${trial})`);
      assert.ok(fd.some((x) => Math.abs(x) > 1e-2), 'the FD check needs non-trivial derivatives');
    }
  });

  it('accepts i32 and f32 lengths alike', () => {
    const r = rng();
    const { ids, lengths } = raggedLengths(r, 10);
    const a = lambdaWeights(onDevice(lengths), onDevice(ids), { lambda: 0.8, groups: 10 });
    const b = lambdaWeights(onDevice(Float32Array.from(lengths)), onDevice(ids), { lambda: 0.8, groups: 10 });
    assertClose(values(a.weights), values(b.weights), { atol: 0, rtol: 0 }, 'weights');
    assertClose(values(a.dWeightsDLambda), values(b.dWeightsDLambda), { atol: 0, rtol: 0 }, 'dWeightsDLambda');
  });

  it('handles an empty batch and empty groups', () => {
    const empty = lambdaWeights(onDevice(new Int32Array(0)), onDevice(new Int32Array(0)), { lambda: 1, groups: 0 });
    assert.equal(values(empty.weights).length, 0);
    if (ON_GPU) {
      // Device ids index per-group memory, so more groups than rows is refused there (CPU ids are renumbered).
      assert.throws(() => lambdaWeights(onDevice(new Int32Array([3, 4])), onDevice(new Int32Array([2, 2])), { lambda: 1, groups: 5 }),
        /groups: 5 groups for 2 rows/);
      return;
    }
    const gaps = lambdaWeights(onDevice(new Int32Array([3, 4])), onDevice(new Int32Array([2, 2])), { lambda: 1, groups: 5 });
    const { sums } = groupSums(values(gaps.weights), new Int32Array([2, 2]), 5);
    assertClose(sums, [0, 0, 2, 0, 0], { atol: 1e-6, rtol: 0 }, 'group sums');
  });

  it('reports group ids outside [0, groups) and negative lengths, naming the argument', () => {
    assert.throws(
      () => lambdaWeights(onDevice(new Int32Array([1, 2, 3])), onDevice(new Int32Array([0, 4, 1])), { lambda: 1, groups: 2 }),
      (e: Error) => e instanceof RangeError && /groupIds: group id.* at index 1/.test(e.message),
    );
    assert.throws(
      () => lambdaWeights(onDevice(new Int32Array([1, 2, -3])), onDevice(new Int32Array([0, 0, 1])), { lambda: 1, groups: 2 }),
      (e: Error) => e instanceof RangeError && /lengths: element 2/.test(e.message),
    );
    assert.throws(
      () => lambdaWeights(onDevice(new Float32Array([1, NaN])), onDevice(new Int32Array([0, 0])), { lambda: 1, groups: 1 }),
      (e: Error) => e instanceof RangeError && /lengths: element 1/.test(e.message),
    );
  });

  it('reports ids, lengths and overflow in the CPU twin\'s order and words on every device', () => {
    const cases: Array<[Float32Array | Int32Array, number[], number, RegExp]> = [
      [Int32Array.from([1, 2, 3]), [0, 4, 1], 1, /^groupIds: group id 4 at index 1 is outside \[0, 2\)$/],
      [Int32Array.from([1, 2, -3]), [0, 0, 1], 1, /^lengths: element 2 is -3; lengths must be finite and >= 0$/],
      [Float32Array.from([1, NaN]), [0, 0], 1, /^lengths: element 1 is NaN; lengths must be finite and >= 0$/],
      [Float32Array.from([1, 2, -Infinity]), [0, 9, 1], 1, /^groupIds: group id 9 at index 1/],  // the earlier row first
      [Float32Array.from([1, 5, 2, 7]), [0, 0, 1, 9], 500, /^groupIds: group id 9 at index 3/],   // inputs before overflow
      [Float32Array.from([1, 5, 2, 7]), [0, 0, 1, 1], 500, /^lambda: h\^lambda overflows at row 1 \(lambda = 500\); keep \|lambda\| moderate$/],
    ];
    for (const [lengths, ids, lambda, message] of cases) {
      for (const place of [(a: Float32Array | Int32Array) => Tensor.from(a), (a: Float32Array | Int32Array) => onDevice(a)]) {
        assert.throws(() => lambdaWeights(place(lengths), place(Int32Array.from(ids)), { lambda, r: 5, groups: 2 }),
          (e: Error) => e instanceof RangeError && message.test(e.message), `lengths ${lengths}, ids ${ids}: expected ${message}`);
      }
    }
  });

  if (!ON_GPU) {
    it('returns TypedArrays for TypedArray inputs and Tensors for Tensor inputs', () => {
      const plain = lambdaWeights(new Int32Array([1, 2]), new Int32Array([0, 0]), { lambda: 1 });
      assert.ok(plain.weights instanceof Float32Array && plain.dWeightsDLambda instanceof Float32Array);
      const wrapped = lambdaWeights(Tensor.from(new Float32Array([1, 2])), new Int32Array([0, 0]), { lambda: 1 });
      assert.ok(wrapped.weights instanceof Tensor);
    });

    it('rejects bad input with errors that name the argument', () => {
      const len = new Int32Array([1, 2]), ids = new Int32Array([0, 0]);
      assert.throws(() => lambdaWeights(len, ids, {} as never), /lambda: required/);
      assert.throws(() => lambdaWeights(len, ids, undefined as never), /lambda: required/);
      assert.throws(() => lambdaWeights(len, ids, { lambda: NaN }), /lambda: expected a finite number/);
      assert.throws(() => lambdaWeights(len, ids, { lambda: 1, r: -0.1 }), /r: expected >= 0/);
      assert.throws(() => lambdaWeights(len, ids, { lambda: 1, groups: 1.5 }), /groups: expected an integer/);
      assert.throws(() => lambdaWeights(new Uint8Array([1, 2]), ids, { lambda: 1 }), /lengths: expected dtype i32 or f32, got u8/);
      assert.throws(() => lambdaWeights(len, new Float32Array([0, 0]), { lambda: 1 }), /groupIds: expected dtype i32, got f32/);
      assert.throws(() => lambdaWeights(len, new Int32Array([0]), { lambda: 1 }), /groupIds: length 1 does not fit shape \[2\]/);
      assert.throws(() => lambdaWeights(len, new Int32Array([0, -1]), { lambda: 1 }), /groupIds: group id -1/);
      assert.throws(() => lambdaWeights(new Float32Array([1, Infinity]), ids, { lambda: 1 }), /lengths: element 1 is Infinity/);
      assert.throws(() => lambdaWeights(new Float32Array([1, 5]), ids, { lambda: 500, r: 5 }), /lambda: .*overflows/);
    });

    it('keeps the raw addon safe from bad arguments', async () => {
      const { addon } = await import('../../src/native.js');
      const t = (a: Float32Array | Int32Array, dtype: string) => ({ dtype, shape: [a.length], device: 'cpu', data: a });
      assert.throws(() => addon().lambdaWeights(t(new Float32Array(2), 'f32'), t(new Int32Array([0, 9]), 'i32'), { lambda: 1, groups: 1 }), RangeError);
      assert.throws(() => addon().lambdaWeights(t(new Float32Array(2), 'f32'), t(new Int32Array(3), 'i32'), { lambda: 1, groups: 1 }), /groupIds/);
      assert.throws(() => addon().lambdaWeights(t(new Float32Array(2), 'f32'), t(new Int32Array(2), 'i32'), { groups: 1 }), /lambda: required/);
    });
  }
});
