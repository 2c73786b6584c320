// The step's policy and λ update on batches built to make one property checkable: rows
// without loss tokens stay out of the λ weights, micro-batches that split groups add up to
// the whole batch at λ ≠ 0 (losses, ∂L/∂λ, the updated weights), λ moves towards the lengths
// that earn reward, λ stands still when the policy update is refused, a non-finite ∂L/∂λ
// is reported, and the logged weight range belongs to the logged λ.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AdamW, NonFiniteGradError } from '../../src/engine/adamw.js';
import type { Policy } from '../../src/engine/policy.js';
import { lambdaWeights } from '../../src/ops/lambda_weights.js';
import { tinyModel } from '../../src/train/model.js';
import { lossLengths, policyUpdate, stepWeights, type UpdateBatch, type UpdateSettings } from '../../src/train/update.js';
import { assertClose, rng } from '../helpers.js';

const SETTINGS: UpdateSettings = {
  loss: 'lambda', lambdaR: 1 / 9, lambdaLr: 0.1, lambdaFixed: false, maskTruncated: false, iterations: 1, microBatch: 1 << 20,
  epsilon: 0.2, epsilonHigh: 0.28, beta: 0, maxNewTokens: 40, temperature: 1,
};

/** A batch of `groups` prompts × G rows with the given completion lengths and advantages. */
function batch(lengths: number[][], advantages: number[][], r = rng('update batch')): UpdateBatch {
  const prompts: number[][] = [], completions: number[][] = [], stopped: boolean[] = [], ids: number[] = [], adv: number[] = [];
  lengths.forEach((group, g) => {
    const prompt = [1, ...Array.from({ length: 3 + g }, () => r.int(3, 60))];
    group.forEach((n, k) => {
      prompts.push(prompt);
      completions.push(Array.from({ length: n }, () => r.int(3, 60)));
      stopped.push(true);
      ids.push(g);
      adv.push(advantages[g][k]);
    });
  });
  return { prompts, completions, stopped, advantages: Float32Array.from(adv), groupIds: Int32Array.from(ids), groups: lengths.length, ref: null };
}

function policyAndOptimizer(seed: number): { policy: Policy; optimizer: AdamW; dispose(): void } {
  const { policy } = tinyModel(seed);
  const optimizer = new AdamW(policy.parameters(), policy.gradients(), { lr: 1e-3, maxGradNorm: 1 });
  return { policy, optimizer, dispose: () => (optimizer.dispose(), policy.dispose()) };
}

const params = (p: Policy) => Float32Array.from(p.parameterBuffer.data as Float32Array);

test('rows without loss tokens (masked truncated rows) stay out of their group\'s λ statistics and softmax', () => {
  // The case: λ = −5, one group of 8 whose longest row was cut and masked.
  const comp = [3, 4, 5, 6, 7, 8, 9, 30].map((n) => new Array<number>(n).fill(5));
  const stopped = [true, true, true, true, true, true, true, false];
  const lengths = lossLengths(comp, stopped, true);
  assert.deepEqual(Array.from(lengths), [3, 4, 5, 6, 7, 8, 9, 0]);
  const ids = new Int32Array(8);
  const w = stepWeights(lengths, ids, { aggregation: 'lambda', lambda: -5, r: 1 / 9, maxLength: 30, groups: 1 });
  assert.equal(w.weights[7], 0, 'the masked row has no weight');
  assert.equal(w.dWeightsDLambda[7], 0);
  // The other seven are weighted among themselves, as if the masked row had not been sampled.
  const alone = lambdaWeights(Int32Array.of(3, 4, 5, 6, 7, 8, 9), new Int32Array(7), { lambda: -5 });
  assertClose(w.weights.subarray(0, 7), alone.weights as Float32Array, { atol: 1e-6 }, 'weights');
  assertClose(w.dWeightsDLambda.subarray(0, 7), alone.dWeightsDLambda as Float32Array, { atol: 1e-6 }, 'dWeights/dλ');
  assert.equal(w.normalizer, 42, 'N = Σ loss tokens');

  // Groups elsewhere in the batch are untouched; a group with every row masked has no weight.
  const ids2 = Int32Array.of(0, 0, 1, 1, 1, 2, 2);
  const len2 = Int32Array.of(0, 0, 5, 0, 9, 4, 6);
  const w2 = stepWeights(len2, ids2, { aggregation: 'lambda', lambda: 2, r: 1 / 9, maxLength: 10, groups: 3 });
  const ref2 = lambdaWeights(Int32Array.of(5, 9, 4, 6), Int32Array.of(0, 0, 1, 1), { lambda: 2 });
  assertClose(Array.from(w2.weights), [0, 0, ref2.weights[0], 0, ref2.weights[1], ref2.weights[2], ref2.weights[3]], { atol: 1e-6 }, 'weights');
  // Every other aggregation keeps its own rule (grpo: 1/|o|, 0 for an empty row).
  const g = stepWeights(len2, ids2, { aggregation: 'grpo', lambda: 0, r: 1 / 9, maxLength: 10, groups: 3 });
  assertClose(Array.from(g.weights), [0, 0, 1 / 5, 0, 1 / 9, 1 / 4, 1 / 6], { atol: 1e-7 }, 'grpo weights');
  assert.equal(g.normalizer, 7);
});

test('micro-batches that split groups give the loss, ∂L/∂λ, λ and updated weights of the whole batch (λ ≠ 0)', () => {
  const r = rng('micro-batch');
  // Three groups of 4 with spread lengths and advantages; micro-batches of 3 cut every group.
  const lengths = [[2, 9, 5, 14], [7, 3, 11, 6], [4, 12, 8, 1]];
  // Advantages that follow length within each group, plus noise: ∂L/∂λ sums advantage ×
  // standardized length, which purely random advantages can cancel (seed 1137434251 drew a
  // |∂L/∂λ| of 3e-5, under the guard below).
  const adv = lengths.map((g) => {
    const mean = g.reduce((a, n) => a + n, 0) / g.length;
    return g.map((n) => (n - mean) / 5 + r.uniform(-0.5, 0.5));
  });
  const b = batch(lengths, adv, r);
  const runs = [12, 3, 5].map((microBatch) => {
    const { policy } = tinyModel(7);
    // Plain SGD, so the updated weights carry the gradient's rounding as it is (Adam's
    // m/√v would blow up the rounding of near-zero gradients into whole steps).
    const sgd = {
      step() {
        const p = policy.parameterBuffer.data as Float32Array, g = policy.gradientBuffer.data as Float32Array;
        let sq = 0;
        for (let i = 0; i < p.length; i++) {
          sq += g[i] * g[i];
          p[i] -= 0.5 * g[i];
        }
        return { lr: 0.5, gradNorm: Math.sqrt(sq), clipped: false };
      },
    };
    // Two iterations: the second sees ratios ≠ 1 and a moved λ, and reuses the old log-probs.
    const u = policyUpdate(policy, sgd, 0.7, b, { ...SETTINGS, microBatch, iterations: 2, lambdaLr: 0.5 }, (w) => assert.fail(w));
    const out = { u, params: params(policy) };
    policy.dispose();
    return out;
  });
  const [whole, ...split] = runs;
  assert.ok(Math.abs(whole.u.gradLambda[0]) > 1e-4, `∂L/∂λ ${whole.u.gradLambda[0]} should not vanish`);
  assert.notEqual(whole.u.lambda, 0.7);
  const start = (() => { const { policy } = tinyModel(7); const p = params(policy); policy.dispose(); return p; })();
  let moved = 0;
  for (let i = 0; i < start.length; i++) moved = Math.max(moved, Math.abs(whole.params[i] - start[i]));
  assert.ok(moved > 1e-3, `the update moves the weights (by ${moved} at most)`);
  for (const [k, s] of split.entries()) {
    const label = `micro-batch ${[3, 5][k]}`;
    assertClose(s.u.lossSum, whole.u.lossSum, { atol: 1e-6, rtol: 1e-5 }, `${label}: loss`);
    assertClose(s.u.gradLambda, whole.u.gradLambda, { atol: 1e-7, rtol: 1e-5 }, `${label}: ∂L/∂λ`);
    assertClose(s.u.lambda, whole.u.lambda, { atol: 1e-7, rtol: 1e-6 }, `${label}: λ`);
    assertClose(s.u.lastUpdate!.gradNorm, whole.u.lastUpdate!.gradNorm, { rtol: 1e-4 }, `${label}: gradient norm`);
    assertClose(s.params, whole.params, { atol: 1e-6, rtol: 1e-5 }, `${label}: updated weights`);
  }
  // The split does change something when the weights are not the whole step's: a control
  // that the comparison above can fail (per-micro-batch groups give other weights).
  const perChunk = stepWeights(Int32Array.of(2, 9, 5), Int32Array.of(0, 0, 0), { aggregation: 'lambda', lambda: 0.7, r: 1 / 9, maxLength: 40, groups: 1 });
  const wholeW = stepWeights(Int32Array.of(2, 9, 5, 14), Int32Array.of(0, 0, 0, 0), { aggregation: 'lambda', lambda: 0.7, r: 1 / 9, maxLength: 40, groups: 1 });
  assert.ok(Math.abs(perChunk.weights[0] - wholeW.weights[0]) > 1e-3);
});

test('λ rises when longer responses earn the advantage, and falls when shorter ones do', () => {
  const lengths = [[3, 6, 10, 16], [2, 5, 9, 14]];
  const run = (longWins: boolean) => {
    const adv = lengths.map((g) => {
      const mean = g.reduce((a, b) => a + b, 0) / g.length;
      return g.map((n) => (n > mean === longWins ? 1 : -1));
    });
    const m = policyAndOptimizer(3);
    const u = policyUpdate(m.policy, m.optimizer, 0, batch(lengths, adv), SETTINGS, (w) => assert.fail(w));
    m.dispose();
    return u;
  };
  const up = run(true), down = run(false);
  assert.ok(up.gradLambda[0] < 0 && up.lambda > 0, `long answers rewarded: ∂L/∂λ ${up.gradLambda[0]}, λ ${up.lambda}`);
  assert.ok(down.gradLambda[0] > 0 && down.lambda < 0, `short answers rewarded: ∂L/∂λ ${down.gradLambda[0]}, λ ${down.lambda}`);
  assertClose(up.lambda, -SETTINGS.lambdaLr * up.gradLambda[0], { atol: 1e-12 }, 'one SGD step');
});

test('λ stands still when the policy update is refused for a non-finite gradient', () => {
  const m = policyAndOptimizer(5);
  const refusing = { step: () => { throw new NonFiniteGradError(NaN, 'model.norm.weight', 1); } };
  const warnings: string[] = [];
  const b = batch([[3, 8, 5, 12]], [[1, -1, 1, -1]]);
  const u = policyUpdate(m.policy, refusing, 0.3, b, { ...SETTINGS, iterations: 2, lambdaLr: 1 }, (w) => warnings.push(w));
  m.dispose();
  assert.equal(u.skipped, 2);
  assert.ok(Number.isFinite(u.gradLambda[0]) && u.gradLambda[0] !== 0, 'λ had a gradient it could have followed');
  assert.equal(u.lambda, 0.3);
  assert.equal(warnings.length, 2);
  assert.match(warnings[0], /update was skipped.*λ/s);
});

test('advantages that overflow the loss are refused before λ or the policy change', () => {
  const m = policyAndOptimizer(6);
  const before = Float32Array.from(m.policy.parameterBuffer.data as Float32Array);
  // Advantages at the edge of f32: the loss and ∂L/∂λ would overflow. grpoLoss refuses
  // them with an error naming the cause (the update's guard against a non-finite ∂L/∂λ,
  // which leaves λ and logs a line, stays as a second line of defence).
  const b = batch([[3, 8, 5, 12]], [[3e38, -3e38, 3e38, -3e38]]);
  assert.throws(() => policyUpdate(m.policy, m.optimizer, 0.3, b, SETTINGS, () => {}), /^RangeError: advantages: the loss overflows f32/);
  assert.deepEqual(m.policy.parameterBuffer.data, before);
  m.dispose();
});

test('with several iterations the weight range is the one of the λ reported with it', () => {
  const lengths = [[2, 9, 5, 14], [7, 3, 11, 6]];
  const b = batch(lengths, [[1, -1, 0.5, -0.5], [-1, 1, -0.5, 0.5]]);
  const m = policyAndOptimizer(8);
  const u = policyUpdate(m.policy, m.optimizer, 0.5, b, { ...SETTINGS, iterations: 3, lambdaLr: 20 }, (w) => assert.fail(w));
  m.dispose();
  assert.ok(Math.abs(u.lambda - 0.5) > 0.05, `λ moved: ${u.lambda}`);
  const w = lambdaWeights(Int32Array.from(lengths.flat()), b.groupIds, { lambda: u.lambda });
  const f = w.weights as Float32Array;
  assertClose([u.weightMin, u.weightMax], [Math.min(...f), Math.max(...f)], { atol: 1e-6 }, 'weight range at the reported λ');
});
