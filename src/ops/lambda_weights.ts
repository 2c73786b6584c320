// lambdaWeights: λ-GRPO per-response weights from lengths within each group (spec §4).
// Native twins: native/ops/lambda_weights.cc (CPU), kernels/lambda_weights.cu (CUDA).
import { addon } from '../native.js';
import {
  isTensor, numberOption, optionsArg, output, resolveGroups, sameDevice, tensorArg,
  type Out, type TensorLike,
} from './validate.js';

export interface LambdaWeightsOptions {
  /** the learnable exponent λ (0 gives every weight 1, i.e. DAPO) */
  lambda: number;
  /** slope of h = max(1 + r·z, 1e-6) on the standardised length z; default 1/9 */
  r?: number;
  /** number of groups; default largest group id + 1 (required for CUDA inputs) */
  groups?: number;
}

export interface LambdaWeightsResult<T> {
  /** f_i = G_g · softmax_{j∈g}(h_j^λ)_i; the weights of each group sum to its size */
  weights: Out<T>;
  /** ∂f_i/∂λ, for ∂L/∂λ = (1/N) Σ_i S_i ∂f_i/∂λ */
  dWeightsDLambda: Out<T>;
}

/**
 * Per-response λ-GRPO weights. Within each group g the lengths are standardised with the
 * group's mean and population std (z = (|o| − μ)/max(σ, 1e-8)), mapped to
 * q = max(1 + r z, 1e-6)^λ, and turned into f = G_g · softmax_g(q). Rows of a group need
 * not be adjacent; groups of one (or of equal lengths) get weight 1.
 */
export function lambdaWeights<T extends TensorLike>(
  lengths: T,
  groupIds: TensorLike,
  options: LambdaWeightsOptions,
): LambdaWeightsResult<T> {
  const opts = optionsArg(options);
  const len = tensorArg(lengths, 'lengths', ['i32', 'f32'], [null]);
  const given = tensorArg(groupIds, 'groupIds', ['i32'], [len.shape[0]]);
  sameDevice({ lengths: len, groupIds: given });
  if (opts.lambda === undefined) throw new TypeError('lambda: required (a finite number; 0 gives all weights 1)');
  const lambda = numberOption(opts.lambda, 'lambda', 0);
  const r = numberOption(opts.r, 'r', 1 / 9, { min: 0 });
  const { ids, groups } = resolveGroups(given, 'groupIds', opts.groups, len.shape[0], true);
  // Lengths are checked by both native twins, row by row, with the same words.
  const native = addon().lambdaWeights(len, ids, { lambda, r, groups });
  const asTensor = isTensor(lengths);
  return {
    weights: output(native.weights, asTensor),
    dWeightsDLambda: output(native.dWeightsDLambda, asTensor),
  } as LambdaWeightsResult<T>;
}
