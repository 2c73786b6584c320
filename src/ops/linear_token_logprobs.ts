// linearTokenLogprobs: the LM head and the token log-prob in one pass (spec §1,
// fused-linear form). logits = hidden · weightᵀ / τ are formed tile by tile and never
// held whole, so memory stays O(N + tile) instead of the N × V logits (2.5 GB at
// N = 4096, V = 151936). Native twins: native/ops/linear_token_logprobs.cc (CPU),
// kernels/linear_token_logprobs.cu (CUDA).
import type { FloatDType } from '../dtype.js';
import { addon } from '../native.js';
import type { Tensor } from '../tensor.js';
import {
  boolOption, checkFinite, checkIdRange, enumOption, isTensor, numberOption, optionsArg, output, sameDevice, temperatureOption, tensorArg,
  type Out, type TensorLike,
} from './validate.js';

const FLOATS = ['f32', 'bf16', 'f16'] as const;

export interface LinearTokenLogprobsOptions {
  /** sampling temperature τ: logits are (W h)/τ; default 1 */
  temperature?: number;
  /** also return the entropy H of softmax(logits); default false */
  entropy?: boolean;
  /** format of plain Uint16Array inputs: 'bf16' or 'f16' */
  dtype?: FloatDType;
}

export interface LinearTokenLogprobsResult<T> {
  /** log p(target) per row, f32 */
  logprobs: Out<T>;
  /** entropy per row (only with {entropy: true}), f32 */
  entropy?: Out<T>;
  /** log-sum-exp of the scaled logits per row, f32: the backward needs it */
  lse: Out<T>;
}

export interface LinearTokenLogprobsBackwardOptions {
  /** ∂L/∂H per row (f32); needs `entropy` */
  gradEntropy?: TensorLike;
  /** the forward's entropy output: Σ p x = lse − H enters ∂H/∂x */
  entropy?: TensorLike;
  /** the temperature the forward used; default 1 */
  temperature?: number;
  /** format of plain Uint16Array inputs: 'bf16' or 'f16' */
  dtype?: FloatDType;
}

export interface LinearTokenLogprobsGradients<T> {
  /** ∂L/∂hidden [N, d], f32 whatever the input dtype (master-gradient precision) */
  gradHidden: Out<T>;
  /** ∂L/∂weight [V, d], f32 */
  gradWeight: Out<T>;
}

interface Operands {
  hidden: Tensor;
  weight: Tensor;
  targets: Tensor;
}

function float16Of(dtype: unknown): 'bf16' | 'f16' | undefined {
  const d = enumOption(dtype, 'dtype', FLOATS, 'f32');
  return d === 'f32' ? undefined : d;
}

/**
 * Resolves hidden [N, d], weight [V, d] and targets [N]. N comes from targets; d from
 * whichever of hidden/weight carries a shape, else from the length of plain hidden.
 * With plain arrays and no rows, d cannot be known and does not matter (every output
 * is flat and empty or zero), so weight is read as one row.
 */
function operands(hidden: unknown, weight: unknown, targets: unknown, float16: 'bf16' | 'f16' | undefined): Operands {
  const y = tensorArg(targets, 'targets', ['i32'], [null]);
  const rows = y.shape[0];
  let h: Tensor, w: Tensor;
  if (isTensor(hidden) || rows > 0) {
    h = tensorArg(hidden, 'hidden', FLOATS, [rows, null], float16);
    w = tensorArg(weight, 'weight', FLOATS, [null, h.shape[1]], float16);
  } else {
    w = tensorArg(weight, 'weight', FLOATS, isTensor(weight) ? [null, null] : [1, null], float16);
    h = tensorArg(hidden, 'hidden', FLOATS, [rows, w.shape[1]], float16);
  }
  if (w.dtype !== h.dtype)
    throw new TypeError(`weight: dtype ${w.dtype} differs from hidden's ${h.dtype}; convert one of them`);
  sameDevice({ hidden: h, weight: w, targets: y });
  checkIdRange(y, 'targets', w.shape[0], 'target');
  return { hidden: h, weight: w, targets: y };
}

/**
 * Per-row log-probability of `targets` under softmax(hidden · weightᵀ / τ), without
 * forming the logits. hidden and weight share a dtype (f32, bf16 or f16); results are
 * f32, accumulated in f32.
 */
export function linearTokenLogprobs<T extends TensorLike>(
  hidden: T,
  weight: TensorLike,
  targets: TensorLike,
  options?: LinearTokenLogprobsOptions,
): LinearTokenLogprobsResult<T> {
  const opts = optionsArg(options);
  const o = operands(hidden, weight, targets, float16Of(opts.dtype));
  const temperature = temperatureOption(opts.temperature);
  const entropy = boolOption(opts.entropy, 'entropy', false);
  const native = addon().linearTokenLogprobs(o.hidden, o.weight, o.targets, { temperature, entropy });
  const asTensor = isTensor(hidden);
  const result: Record<string, unknown> = { logprobs: output(native.logprobs, asTensor), lse: output(native.lse, asTensor) };
  if (entropy) result.entropy = output(native.entropy, asTensor);
  return result as unknown as LinearTokenLogprobsResult<T>;
}

/**
 * Gradients of L through linearTokenLogprobs, given ∂L/∂logprobs (and optionally
 * ∂L/∂entropy): recomputes the logits tile by tile. Both gradients are f32 and include
 * the 1/τ factor.
 */
export function linearTokenLogprobsBackward<T extends TensorLike>(
  hidden: T,
  weight: TensorLike,
  targets: TensorLike,
  lse: TensorLike,
  gradLogprobs: TensorLike,
  options?: LinearTokenLogprobsBackwardOptions,
): LinearTokenLogprobsGradients<T> {
  const opts = optionsArg(options);
  const o = operands(hidden, weight, targets, float16Of(opts.dtype));
  const rows = o.targets.shape[0];
  const lseT = tensorArg(lse, 'lse', ['f32'], [rows]);
  const g = tensorArg(gradLogprobs, 'gradLogprobs', ['f32'], [rows]);
  const named: Record<string, Tensor> = { lse: lseT, gradLogprobs: g };
  const nativeOpts: Record<string, unknown> = { temperature: temperatureOption(opts.temperature) };
  if (opts.gradEntropy !== undefined) {
    if (opts.entropy === undefined)
      throw new TypeError('entropy: required with gradEntropy (pass the entropy output of linearTokenLogprobs(..., {entropy: true}))');
    named.gradEntropy = nativeOpts.gradEntropy = tensorArg(opts.gradEntropy, 'gradEntropy', ['f32'], [rows]);
    named.entropy = nativeOpts.entropy = tensorArg(opts.entropy, 'entropy', ['f32'], [rows]);
  }
  sameDevice({ hidden: o.hidden, ...named });
  for (const [name, t] of Object.entries(named)) checkFinite(t, name);
  const native = addon().linearTokenLogprobsBackward(o.hidden, o.weight, o.targets, lseT, g, nativeOpts);
  const asTensor = isTensor(hidden);
  return {
    gradHidden: output(native.gradHidden, asTensor),
    gradWeight: output(native.gradWeight, asTensor),
  } as LinearTokenLogprobsGradients<T>;
}
