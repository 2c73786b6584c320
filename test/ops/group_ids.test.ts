// Issue 12 item 8: group ids are labels. groupAdvantages on 2 rows with ids
// [0, 2^31 − 1] allocated and touched memory in proportion to the largest id. Ops whose
// outputs are per row renumber sparse ids (no result changes); groupAdvantages, whose
// groupMean/groupStd are indexed by id, bounds them by the row count and says so.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { grpoLoss, grpoLossWeights, groupAdvantages, lambdaWeights } from '../../src/index.js';
import { ON_GPU, TEST_DEVICE, onDevice, rng, values } from '../helpers.js';

/** Runs `call`, failing if the peak RSS grows by 100 MiB or more while it runs. */
function cheaply<T>(label: string, call: () => T): T {
  const peak = process.resourceUsage().maxRSS;
  const out = call();
  const grew = (process.resourceUsage().maxRSS - peak) / 1024;
  assert.ok(grew < 100, `${label}: peak RSS grew by ${grew.toFixed(0)} MiB`);
  return out;
}

describe(`group ids as labels on ${TEST_DEVICE}`, () => {
  it('groupAdvantages bounds ids (and groups) by the row count, naming the id', () => {
    const rewards = onDevice(Float32Array.of(1, 2));
    if (!ON_GPU) {
      assert.throws(() => cheaply('huge id', () => groupAdvantages(rewards, onDevice(Int32Array.of(0, 2 ** 31 - 1)))),
        (e: Error) => e instanceof RangeError && /^groupIds: group id 2147483647 at index 1 is not below the row count 2/.test(e.message));
      assert.throws(() => groupAdvantages(rewards, onDevice(Int32Array.of(2, 2))), /group id 2 at index 0 is not below the row count 2/);
    }
    assert.throws(() => cheaply('huge groups', () => groupAdvantages(rewards, onDevice(Int32Array.of(0, 1)), { groups: 2 ** 31 - 1 })),
      (e: Error) => e instanceof RangeError && /^groups: 2147483647 groups for 2 rows/.test(e.message));
    // Dense ids below the row count, and `groups` up to it, are as before.
    const ok = groupAdvantages(rewards, onDevice(Int32Array.of(1, 1)), { groups: 2 });
    assert.deepEqual(Array.from(values(ok.groupMean)), [0, 1.5]);
  });

  it('lambdaWeights, grpoLoss and grpoLossWeights renumber sparse ids and give the same bits', { skip: ON_GPU }, () => {
    const r = rng('group ids');
    const B = 12, T = 9;
    const dense = Int32Array.of(0, 1, 0, 2, 1, 1, 3, 0, 2, 4, 4, 3);
    const labels = [7, 2 ** 31 - 1, 3_000_000, 2 ** 26, 123_456_789];  // label of dense group g
    const sparse = dense.map((g) => labels[g]);
    const lengths = Int32Array.from({ length: B }, () => r.int(0, T + 1));
    const lw = (ids: Int32Array) => lambdaWeights(lengths, ids, { lambda: 0.7 });
    const a = lw(dense), b = cheaply('lambdaWeights', () => lw(sparse));
    assert.deepEqual(b.weights, a.weights);
    assert.deepEqual(b.dWeightsDLambda, a.dWeightsDLambda);
    // An explicit `groups` larger than the rows (a micro-batch of a bigger step) is fine too.
    assert.deepEqual(lambdaWeights(lengths, dense, { lambda: 0.7, groups: 2 ** 30 }).weights, a.weights);

    const mask = new Uint8Array(B * T).map((_, i) => Number(i % T < lengths[Math.floor(i / T)]));
    const logprobs = r.normals(B * T, 0.1).map((x) => x - 1);
    const oldLogprobs = logprobs.map((x) => x + 0.05 * r.normal());
    const advantages = r.normals(B);
    const loss = (ids: Int32Array) => grpoLoss({ logprobs, oldLogprobs, advantages, mask, groupIds: ids, aggregation: 'lambda', lambda: 0.4 });
    const la = loss(dense), lb = cheaply('grpoLoss', () => loss(sparse));
    assert.equal(lb.loss, la.loss);
    assert.equal(lb.gradLambda, la.gradLambda);
    assert.deepEqual(lb.gradLogprobs, la.gradLogprobs);

    const wa = grpoLossWeights(lengths, dense, { aggregation: 'lambda', lambda: 0.4 });
    const wb = cheaply('grpoLossWeights', () => grpoLossWeights(lengths, sparse, { aggregation: 'lambda', lambda: 0.4 }));
    assert.deepEqual(wb.weights, wa.weights);
    assert.deepEqual(wb.dWeightsDLambda, wa.dWeightsDLambda);
    // Negative ids stay an error.
    assert.throws(() => lambdaWeights(lengths, dense.map((g) => g - 1), { lambda: 0.7 }), /groupIds: group id -1 at index 0 is negative/);
  });
});
