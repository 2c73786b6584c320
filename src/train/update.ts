// The policy (and λ) update of one training step, given the step's sampled batch: μ =
// --iterations passes over the batch in micro-batches, each pass ending in one optimiser
// update and one λ update. Kept apart from the trainer so that tests can hand it a batch
// they built (lengths, rewards, group layout chosen to make a property checkable) instead
// of whatever the policy happened to sample.
//
// The math is docs/lambda-grpo-math.md §3-§5: the weights and normaliser belong to the whole
// step, so the micro-batch split changes nothing but rounding (§5), and ∂L/∂λ is summed
// over the micro-batches before λ steps.
import { NonFiniteGradError } from '../engine/adamw.js';
import type { Policy } from '../engine/policy.js';
import { grpoLoss, grpoLossWeights, type Aggregation, type GrpoLossWeights } from '../ops/grpo_loss.js';
import { completionPass } from './token_pass.js';

/** One step's trained rows: groups are the rows sharing an id (the rows of one prompt). */
export interface UpdateBatch {
  prompts: readonly (readonly number[])[];
  completions: readonly (readonly number[])[];
  /** Ended on a stop id; false: cut at the length limit. */
  stopped: readonly boolean[];
  advantages: Float32Array;
  groupIds: Int32Array;
  groups: number;
  /** Per-row reference log-probs of the completion tokens (β > 0). */
  ref: Float32Array[] | null;
}

export interface UpdateSettings {
  loss: Aggregation;
  lambdaR: number;
  lambdaLr: number;
  lambdaFixed: boolean;
  maskTruncated: boolean;
  iterations: number;
  microBatch: number;
  epsilon: number;
  epsilonHigh: number;
  beta: number;
  maxNewTokens: number;
  temperature: number;
}

/** What the update needs of an optimiser (AdamW; a test may pass its own). */
export interface StepOptimizer {
  step(): { lr: number; gradNorm: number; clipped: boolean };
}

export interface UpdateResult {
  /** λ after the step. */
  lambda: number;
  /** Σ over iterations of the step's loss. */
  lossSum: number;
  /** ∂L/∂λ of each iteration (summed over its micro-batches). */
  gradLambda: number[];
  /** Range over the rows with loss tokens of the weights the final λ gives the batch (±Infinity when none). */
  weightMin: number;
  weightMax: number;
  /** Entropy summed over the first iteration's loss tokens, and their count. */
  entropySum: number;
  entropyTokens: number;
  /** Token-weighted sums of the kernel's per-call statistics, and the token count. */
  clipLow: number;
  clipHigh: number;
  ratio: number;
  kl: number;
  tokens: number;
  lastUpdate: { lr: number; gradNorm: number; clipped: boolean } | null;
  /** Optimiser updates refused for a non-finite gradient. */
  skipped: number;
}

/** The number of loss tokens of each row: its length, or 0 for a cut row under --mask-truncated. */
export function lossLengths(completions: readonly (readonly number[])[], stopped: readonly boolean[], maskTruncated: boolean): Int32Array {
  return Int32Array.from(completions, (comp, i) => (maskTruncated && !stopped[i] ? 0 : comp.length));
}

/**
 * The whole step's weights, ∂w/∂λ and normaliser for these loss lengths. A row without
 * loss tokens (a cut row under --mask-truncated) is no response of its group as far as
 * the loss goes: under 'lambda' it takes no part in its group's length statistics or
 * softmax, so it neither counts as the group's shortest response nor draws weight away
 * from the rows that are trained (docs/lambda-grpo-math.md §4: G_g counts the rows weighted).
 * The other aggregations already give such a row nothing (and keep their normalisers).
 */
export function stepWeights(
  lengths: Int32Array,
  groupIds: Int32Array,
  options: { aggregation: Aggregation; lambda: number; r: number; maxLength: number; groups: number },
): GrpoLossWeights {
  const whole = grpoLossWeights(lengths, groupIds, options);
  if (options.aggregation !== 'lambda') return whole;
  const rows: number[] = [];
  for (let i = 0; i < lengths.length; i++) if (lengths[i] > 0) rows.push(i);
  if (rows.length === lengths.length) return whole;
  const weights = new Float32Array(lengths.length), dWeightsDLambda = new Float32Array(lengths.length);
  if (rows.length > 0) {
    // Renumbered so that a group left without rows is no group at all.
    const renumber = new Map<number, number>();
    const ids = Int32Array.from(rows, (i) => {
      let id = renumber.get(groupIds[i]);
      if (id === undefined) renumber.set(groupIds[i], (id = renumber.size));
      return id;
    });
    const kept = grpoLossWeights(Int32Array.from(rows, (i) => lengths[i]), ids, { ...options, groups: renumber.size });
    rows.forEach((i, k) => {
      weights[i] = kept.weights[k];
      dWeightsDLambda[i] = kept.dWeightsDLambda[k];
    });
  }
  return { weights, dWeightsDLambda, normalizer: whole.normalizer };
}

function setWeightRange(result: UpdateResult, weights: Float32Array, lengths: Int32Array): void {
  for (let i = 0; i < lengths.length; i++)
    if (lengths[i] > 0) {
      result.weightMin = Math.min(result.weightMin, weights[i]);
      result.weightMax = Math.max(result.weightMax, weights[i]);
    }
}

/**
 * Trains the policy on one step's batch: μ = settings.iterations passes, each over the
 * micro-batches, then one optimiser update and (λ-GRPO, unless fixed) one λ update.
 * The first pass's detached log-probs are the old log-probs (the policy that sampled is
 * the policy before this step's first update). Leaves the policy's gradients zeroed.
 */
export function policyUpdate(
  policy: Policy,
  optimizer: StepOptimizer,
  lambdaStart: number,
  batch: UpdateBatch,
  s: UpdateSettings,
  warn: (message: string) => void,
): UpdateResult {
  const { prompts, completions, advantages: adv, groupIds: ids, groups, ref } = batch;
  const B = prompts.length;
  const lengths = lossLengths(completions, batch.stopped, s.maskTruncated);
  const old: Float32Array[] = new Array(B);
  const bounds: Array<[number, number]> = [];
  for (let a = 0; a < B; a += s.microBatch) bounds.push([a, Math.min(B, a + s.microBatch)]);

  let lambda = lambdaStart;
  const result: UpdateResult = {
    lambda, lossSum: 0, gradLambda: [], weightMin: Infinity, weightMax: -Infinity, entropySum: 0, entropyTokens: 0,
    clipLow: 0, clipHigh: 0, ratio: 0, kl: 0, tokens: 0, lastUpdate: null, skipped: 0,
  };
  for (let it = 0; it < s.iterations; it++) {
    const w = stepWeights(lengths, ids, { aggregation: s.loss, lambda, r: s.lambdaR, maxLength: s.maxNewTokens, groups });
    policy.zeroGrad();
    let gradLambda = 0;
    for (const [a, b] of bounds) {
      const pass = completionPass(policy, prompts.slice(a, b), completions.slice(a, b), { temperature: s.temperature, entropy: it === 0 });
      const rows = b - a;
      let Tc = 1;
      for (let i = a; i < b; i++) Tc = Math.max(Tc, completions[i].length);
      const lp = new Float32Array(rows * Tc), oldLp = new Float32Array(rows * Tc), mask = new Uint8Array(rows * Tc);
      const refLp = ref ? new Float32Array(rows * Tc) : undefined;
      for (let r = 0; r < rows; r++) {
        const i = a + r;
        const from = pass.offsets[r], n = completions[i].length;
        const here = pass.logprobs.subarray(from, from + n);
        if (it === 0) {
          old[i] = here.slice();
          if (pass.entropy && lengths[i] > 0)
            for (let j = 0; j < n; j++) {
              result.entropySum += pass.entropy[from + j];
              result.entropyTokens++;
            }
        }
        lp.set(here, r * Tc);
        oldLp.set(old[i], r * Tc);
        if (refLp) refLp.set(ref![i], r * Tc);
        mask.fill(1, r * Tc, r * Tc + lengths[i]);
      }
      const res = grpoLoss({
        logprobs: lp, oldLogprobs: oldLp, refLogprobs: refLp, advantages: adv.subarray(a, b), mask,
        groupIds: ids.subarray(a, b), groups, aggregation: s.loss, lambda, r: s.lambdaR,
        epsLow: s.epsilon, epsHigh: s.epsilonHigh, beta: s.beta, maxLength: s.maxNewTokens,
        weights: w.weights.subarray(a, b),
        dWeightsDLambda: s.loss === 'lambda' ? w.dWeightsDLambda.subarray(a, b) : undefined,
        normalizer: w.normalizer,
      });
      result.lossSum += res.loss;
      gradLambda += res.gradLambda;
      const tok = res.stats.tokens;
      result.clipLow += res.stats.clipFracLow * tok;
      result.clipHigh += res.stats.clipFracHigh * tok;
      result.ratio += res.stats.ratioMean * tok;
      result.kl += res.stats.klMean * tok;
      result.tokens += tok;
      const g = res.gradLogprobs as Float32Array;
      const coeff = new Float32Array(pass.tokens);
      for (let r = 0; r < rows; r++) coeff.set(g.subarray(r * Tc, r * Tc + completions[a + r].length), pass.offsets[r]);
      pass.backward(coeff);
    }
    result.gradLambda.push(gradLambda);
    const learnsLambda = s.loss === 'lambda' && !s.lambdaFixed && s.lambdaLr > 0;
    let updated = true;
    try {
      const u = optimizer.step();
      result.lastUpdate = { lr: u.lr, gradNorm: u.gradNorm, clipped: u.clipped };
    } catch (e) {
      if (!(e instanceof NonFiniteGradError)) throw e;
      result.skipped++;
      updated = false;
      // λ and the policy are one model: a step that cannot move the policy moves neither.
      warn(`${e.message} The update was skipped${learnsLambda ? `, and λ stays at ${lambda}` : ''}.`);
    }
    if (learnsLambda) {
      if (!Number.isFinite(gradLambda)) warn(`∂L/∂λ is ${gradLambda} (iteration ${it + 1}); λ stays at ${lambda}.`);
      else if (updated) lambda -= s.lambdaLr * gradLambda;
    }
  }
  policy.zeroGrad();
  result.lambda = lambda;
  // The weight range is logged beside λ, so it is the range this λ gives the batch: with
  // several iterations the λ of any one pass would be a different one.
  const final = stepWeights(lengths, ids, { aggregation: s.loss, lambda, r: s.lambdaR, maxLength: s.maxNewTokens, groups });
  setWeightRange(result, final.weights, lengths);
  return result;
}
