// grpoLoss: the clipped-surrogate loss of the λ-GRPO family with its gradients, in one
// pass over the tokens (spec §3-5). Native twins: native/ops/grpo_loss.cc (CPU, and the
// host orchestration shared by both devices), kernels/grpo_loss.cu (CUDA).
import { addon } from '../native.js';
import type { Tensor } from '../tensor.js';
import { lambdaWeights } from './lambda_weights.js';
import {
  checkFinite, enumOption, isTensor, numberOption, output, resolveGroups, sameDevice, tensorArg,
  type Out, type TensorLike,
} from './validate.js';

/**
 * How token losses are weighted and normalised, L = (1/N) Σ_i w_i Σ_t mask_it ℓ_it:
 * - 'grpo':    w_i = 1/|o_i|, N = B (every row counts, zero-length rows included: they add 0)
 *              — verl seq-mean-token-mean, TRL loss_type="grpo"
 * - 'dapo':    w_i = 1, N = Σ_i |o_i| — verl token-mean, TRL "dapo"/"bnpo"
 * - 'dr_grpo': w_i = 1, N = B · maxLength — verl seq-mean-token-sum-norm, TRL "dr_grpo"
 * - 'lambda':  w_i = f_i from lambdaWeights(λ), N = Σ_i |o_i| — λ-GRPO (λ = 0 is 'dapo')
 * N is floored at 1 (as TRL clamps the token count); it matters only without any token.
 */
export type Aggregation = 'grpo' | 'dapo' | 'dr_grpo' | 'lambda';
export const AGGREGATIONS: readonly Aggregation[] = ['grpo', 'dapo', 'dr_grpo', 'lambda'];

export interface GrpoLossInput<T extends TensorLike = TensorLike> {
  /** log π(o_t) under the current policy, f32 [B, T]; the gradient is taken w.r.t. these */
  logprobs: T;
  /** log-probs under the policy that sampled the batch, f32 [B, T] */
  oldLogprobs: TensorLike;
  /** log-probs under the frozen reference policy, f32 [B, T]; needed when beta > 0 */
  refLogprobs?: TensorLike;
  /** per-row advantages A_i, f32 [B] */
  advantages: TensorLike;
  /** 1 for response tokens, 0 for padding; u8 or f32 [B, T] */
  mask: TensorLike;
  /** prompt id of each row, i32 [B]: rows sharing it form a group (used by 'lambda') */
  groupIds: TensorLike;
  aggregation: Aggregation;
  /** λ for 'lambda' (default 0) */
  lambda?: number;
  /** slope r of the λ weights (default 1/9) */
  r?: number;
  /** lower clip ε: ratios below 1 − epsLow are clipped (default 0.2) */
  epsLow?: number;
  /** upper clip ε: ratios above 1 + epsHigh are clipped (default 0.2; DAPO's clip-higher uses 0.28) */
  epsHigh?: number;
  /** dual-clip constant c > 1: for A < 0 the surrogate is at least c·A (off by default) */
  dualClip?: number;
  /** coefficient of the k3 KL penalty to refLogprobs (default 0) */
  beta?: number;
  /** L_max of 'dr_grpo' (default T) */
  maxLength?: number;
  /**
   * Whole-step weights w_i for these rows (from grpoLossWeights or an earlier whole-batch
   * call), f32 [B] on the CPU or the inputs' device. With weights, dWeightsDLambda ('lambda'
   * only) and normalizer taken from the whole optimiser step, micro-batches add up to it.
   */
  weights?: TensorLike;
  /** ∂w_i/∂λ for these rows; required with `weights` in 'lambda' mode */
  dWeightsDLambda?: TensorLike;
  /** whole-step N (> 0) */
  normalizer?: number;
  /** number of groups (default largest id + 1) */
  groups?: number;
}

export interface GrpoLossStats {
  /** fraction of response tokens with ρ < 1 − epsLow and A < 0 (TRL's clip_ratio/low_mean) */
  clipFracLow: number;
  /** fraction of response tokens with ρ > 1 + epsHigh and A > 0 (TRL's clip_ratio/high_mean) */
  clipFracHigh: number;
  /** fraction of response tokens where the dual-clip bound c·A was active */
  dualClipFrac: number;
  /** mean of ρ over response tokens */
  ratioMean: number;
  /** mean k3 KL over response tokens (0 without refLogprobs) */
  klMean: number;
  /** response tokens in this call, Σ_i |o_i| */
  tokens: number;
  /** tokens / B */
  meanLength: number;
  /** smallest and largest w_i over rows with at least one response token (0 when none) */
  weightMin: number;
  weightMax: number;
  /** rows without any response token */
  emptyRows: number;
  /** rows whose advantage is exactly 0 (e.g. degenerate groups): no policy-gradient signal */
  degenerateRows: number;
}

export interface GrpoLossResult<T> {
  loss: number;
  /** ∂loss/∂logprobs, f32 [B, T] (0 on padding) */
  gradLogprobs: Out<T>;
  /** ∂loss/∂λ ('lambda' mode; 0 otherwise). Sum it over micro-batches before λ steps. */
  gradLambda: number;
  /** each row's share of the loss, w_i S_i / N: the entries sum to `loss` */
  seqLoss: Out<T>;
  /** the w_i used */
  weights: Out<T>;
  /** the ∂w_i/∂λ used (0 outside 'lambda') */
  dWeightsDLambda: Out<T>;
  /** |o_i| = Σ_t mask */
  lengths: Out<T>;
  /** the N used */
  normalizer: number;
  stats: GrpoLossStats;
}

function rowOption(value: unknown, name: string, rows: number, device: string): Tensor | undefined {
  if (value === undefined) return undefined;
  const t = tensorArg(value, name, ['f32'], [rows]);
  if (t.isCuda && t.device !== device)
    throw new TypeError(`${name}: is on ${t.device} but logprobs is on ${device}; move them to one device`);
  checkFinite(t, name);
  return t;
}

/**
 * The clipped-surrogate policy loss with its gradient w.r.t. logprobs and (for 'lambda')
 * w.r.t. λ, from one pass over the tokens. Per token (spec §3), with ρ the probability ratio:
 *   s = min(ρA, clip(ρ, 1 − epsLow, 1 + epsHigh)·A)    (dual clip: s = max(s, c·A) for A < 0)
 *   ρ = exp(clamp(logp − oldLogp, ±20))                (as verl; the ρ branch is flat outside the clamp)
 *   kl = exp(d) − d − 1,  d = clamp(ref − logp, ±20)   (k3; flat in logp outside the clamp)
 *   ℓ = −s + β·kl
 * aggregated as L = (1/N) Σ_i w_i Σ_t mask ℓ (see Aggregation). NaN or Inf in any input,
 * padding included, is a RangeError naming the input.
 */
export function grpoLoss<T extends TensorLike>(input: GrpoLossInput<T>): GrpoLossResult<T> {
  if (input === null || typeof input !== 'object') throw new TypeError('input: expected an object {logprobs, oldLogprobs, ...}');
  const adv = tensorArg(input.advantages, 'advantages', ['f32'], [null]);
  const B = adv.shape[0];
  const logprobs = tensorArg(input.logprobs, 'logprobs', ['f32'], [B, null]);
  const T = logprobs.shape[1];
  const old = tensorArg(input.oldLogprobs, 'oldLogprobs', ['f32'], [B, T]);
  const ref = input.refLogprobs === undefined ? undefined : tensorArg(input.refLogprobs, 'refLogprobs', ['f32'], [B, T]);
  const mask = tensorArg(input.mask, 'mask', ['u8', 'f32'], [B, T]);
  const givenIds = tensorArg(input.groupIds, 'groupIds', ['i32'], [B]);
  sameDevice({ logprobs, oldLogprobs: old, refLogprobs: ref, advantages: adv, mask, groupIds: givenIds });

  if (input.aggregation === undefined) throw new TypeError(`aggregation: required (${AGGREGATIONS.map((a) => `'${a}'`).join(', ')})`);
  const aggregation = enumOption(input.aggregation, 'aggregation', AGGREGATIONS, 'lambda');
  const lambda = numberOption(input.lambda, 'lambda', 0);
  const r = numberOption(input.r, 'r', 1 / 9, { min: 0 });
  const epsLow = numberOption(input.epsLow, 'epsLow', 0.2, { min: 0 });
  const epsHigh = numberOption(input.epsHigh, 'epsHigh', 0.2, { min: 0 });
  const dualClip = input.dualClip === undefined ? undefined : numberOption(input.dualClip, 'dualClip', 0, { above: 1 });
  const beta = numberOption(input.beta, 'beta', 0, { min: 0 });
  if (beta > 0 && !ref) throw new TypeError('refLogprobs: required when beta > 0');
  const maxLength = numberOption(input.maxLength, 'maxLength', Math.max(T, 1), { min: 1, integer: true });
  const normalizer = input.normalizer === undefined ? undefined : numberOption(input.normalizer, 'normalizer', 1, { above: 0 });
  // Each row's gradients are scaled by w_i/N in f32: an N whose reciprocal overflows f32
  // (1e-300 was accepted) made them all infinite.
  if (normalizer !== undefined && !Number.isFinite(Math.fround(1 / normalizer)))
    throw new RangeError(`normalizer: ${normalizer} is too small (1/normalizer overflows f32); pass the step's token or row count`);
  const weights = rowOption(input.weights, 'weights', B, logprobs.device);
  const dWeights = rowOption(input.dWeightsDLambda, 'dWeightsDLambda', B, logprobs.device);
  if (dWeights && aggregation !== 'lambda') throw new TypeError(`dWeightsDLambda: only used with aggregation 'lambda'`);
  if (dWeights && !weights) throw new TypeError('dWeightsDLambda: pass it together with weights');
  if (weights && aggregation === 'lambda' && !dWeights)
    throw new TypeError("dWeightsDLambda: required with weights in 'lambda' mode (it carries the gradient of lambda)");
  // The binding reads the B ids on the host whatever the device, so CUDA ids are read here
  // too and renumbered like CPU ones when sparse (the result does not depend on labels).
  const hostIds = givenIds.isCuda ? givenIds.to('cpu') : givenIds;
  const resolved = resolveGroups(hostIds, 'groupIds', input.groups, B, true);
  const groups = resolved.groups;
  const ids = resolved.ids === hostIds ? givenIds : givenIds.isCuda ? resolved.ids.to(givenIds.device) : resolved.ids;
  if (hostIds !== givenIds) hostIds.dispose();
  checkFinite(adv, 'advantages');

  const opts: Record<string, unknown> = { aggregation, lambda, r, epsLow, epsHigh, beta, maxLength };
  if (dualClip !== undefined) opts.dualClip = dualClip;
  if (normalizer !== undefined) opts.normalizer = normalizer;
  if (weights) opts.weights = weights;
  if (dWeights) opts.dWeightsDLambda = dWeights;
  opts.groups = groups;
  const native = addon().grpoLoss(logprobs, old, ref ?? null, adv, mask, ids, opts);
  const asTensor = isTensor(input.logprobs);
  return {
    loss: native.loss,
    gradLogprobs: output(native.gradLogprobs, asTensor),
    gradLambda: native.gradLambda,
    seqLoss: output(native.seqLoss, asTensor),
    weights: output(native.weights, asTensor),
    dWeightsDLambda: output(native.dWeightsDLambda, asTensor),
    lengths: output(native.lengths, asTensor),
    normalizer: native.normalizer,
    stats: native.stats as GrpoLossStats,
  } as GrpoLossResult<T>;
}

export interface GrpoLossWeightsOptions {
  aggregation: Aggregation;
  lambda?: number;
  r?: number;
  /** L_max; required for 'dr_grpo' (grpoLoss defaults it to T, which lengths do not tell) */
  maxLength?: number;
  groups?: number;
}

export interface GrpoLossWeights {
  weights: Float32Array;
  dWeightsDLambda: Float32Array;
  normalizer: number;
}

/**
 * The weights w_i, ∂w_i/∂λ and normaliser N of a whole optimiser step (all micro-batches
 * and ranks) from its response lengths, computed exactly as grpoLoss computes them. Slice
 * them per micro-batch and pass them to grpoLoss so that the micro-batch losses, gradients
 * and gradLambda add up to those of the whole step (spec §5). Small: runs on the CPU.
 */
export function grpoLossWeights(lengths: TensorLike, groupIds: TensorLike, options: GrpoLossWeightsOptions): GrpoLossWeights {
  if (options === null || typeof options !== 'object') throw new TypeError('options: expected an object with aggregation');
  let len = tensorArg(lengths, 'lengths', ['i32', 'f32'], [null]);
  let ids = tensorArg(groupIds, 'groupIds', ['i32'], [len.shape[0]]);
  if (len.isCuda) len = len.to('cpu');
  if (ids.isCuda) ids = ids.to('cpu');
  if (options.aggregation === undefined) throw new TypeError(`aggregation: required (${AGGREGATIONS.map((a) => `'${a}'`).join(', ')})`);
  const aggregation = enumOption(options.aggregation, 'aggregation', AGGREGATIONS, 'lambda');
  const lambda = numberOption(options.lambda, 'lambda', 0);
  const r = numberOption(options.r, 'r', 1 / 9, { min: 0 });
  if (aggregation === 'dr_grpo' && options.maxLength === undefined) throw new TypeError("maxLength: required for 'dr_grpo'");
  const maxLength = numberOption(options.maxLength, 'maxLength', 1, { min: 1, integer: true });
  const dense = resolveGroups(ids, 'groupIds', options.groups, len.shape[0], true);
  ids = dense.ids;
  const groups = dense.groups;
  const values = Float32Array.from(len.cpuData('lengths') as ArrayLike<number>);
  for (let i = 0; i < values.length; i++)
    if (!(values[i] >= 0) || !Number.isFinite(values[i]))
      throw new RangeError(`lengths: element ${i} is ${values[i]}; lengths must be finite and >= 0`);
  const B = values.length;
  // Σ|o| in double, row order, as the native side sums it.
  let tokens = 0;
  for (let i = 0; i < B; i++) tokens += values[i];
  let weights: Float32Array = new Float32Array(B).fill(1);
  let dWeightsDLambda: Float32Array = new Float32Array(B);
  let n: number;
  if (aggregation === 'grpo') {
    for (let i = 0; i < B; i++) weights[i] = values[i] > 0 ? 1 / values[i] : 0;
    n = B;
  } else if (aggregation === 'dr_grpo') {
    n = B * maxLength;
  } else {
    n = tokens;
    if (aggregation === 'lambda') {
      const lw = lambdaWeights(values, ids, { lambda, r, groups });
      weights = lw.weights;
      dWeightsDLambda = lw.dWeightsDLambda;
    }
  }
  return { weights, dWeightsDLambda, normalizer: Math.max(n, 1) };
}
