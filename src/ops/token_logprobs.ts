// tokenLogprobs / tokenLogprobsBackward: fused log-softmax gathered at the target,
// with optional entropy, and its gradient (spec §1). Native twins:
// native/ops/token_logprobs.cc (CPU), kernels/token_logprobs.cu (CUDA).
import type { FloatDType } from '../dtype.js';
import { addon } from '../native.js';
import type { Tensor } from '../tensor.js';
import {
  boolOption, checkFinite, checkIdRange, enumOption, isTensor, optionsArg, output, sameDevice, temperatureOption, tensorArg,
  type Out, type TensorLike,
} from './validate.js';

const FLOAT_DTYPES: readonly FloatDType[] = ['f32', 'bf16', 'f16'];

export interface TokenLogprobsOptions {
  /** logits are divided by this before the softmax (sampling temperature); default 1 */
  temperature?: number;
  /** also return the entropy of each row's softmax; default false */
  entropy?: boolean;
  /** storage format of a plain Uint16Array of logits: 'bf16' or 'f16' */
  dtype?: FloatDType;
}

export interface TokenLogprobsResult<T> {
  /** log p(target) per row */
  logprobs: Out<T>;
  /** H = −Σ p log p per row, when asked for */
  entropy?: Out<T>;
  /** logsumexp of the temperature-scaled logits per row (the backward needs it) */
  lse: Out<T>;
}

export interface TokenLogprobsBackwardOptions {
  /** ∂L/∂entropy per row; needs `entropy` from the forward as well */
  gradEntropy?: TensorLike;
  /** the forward's entropy output; required with gradEntropy */
  entropy?: TensorLike;
  /** the temperature the forward used; default 1 */
  temperature?: number;
  /** write the gradient over the logits and return them; default false */
  inPlace?: boolean;
  /** storage format of a plain Uint16Array of logits: 'bf16' or 'f16' */
  dtype?: FloatDType;
}

/** The gradient has the logits' kind and dtype: a Tensor, or the same TypedArray type. */
export type GradOut<L> = L extends Tensor ? Tensor : L extends Uint16Array ? Uint16Array : Float32Array;

/** targets fix N; logits must then be [N, V] (a TypedArray's V comes from its length). */
function logitsAndTargets(logits: unknown, targets: unknown, dtype: unknown): { x: Tensor; y: Tensor; vocab: number } {
  const y = tensorArg(targets, 'targets', ['i32'], [null]);
  const declared = dtype === undefined ? undefined : enumOption(dtype, 'dtype', FLOAT_DTYPES, 'f32');
  const x = tensorArg(logits, 'logits', FLOAT_DTYPES, [y.shape[0], null], declared === 'f32' ? undefined : declared);
  if (declared !== undefined && x.dtype !== declared)
    throw new TypeError(`dtype: the option says ${declared} but logits are ${x.dtype}`);
  sameDevice({ logits: x, targets: y });
  const vocab = x.shape[1];
  checkIdRange(y, 'targets', vocab, 'target');
  return { x, y, vocab };
}

/**
 * Per-row log-probability of the target token under softmax(logits / temperature), in
 * one streaming pass over the logits (never materialising the log-softmax).
 * logits: [N, V] f32 | bf16 | f16; targets: i32 [N], each in [0, V).
 */
export function tokenLogprobs<T extends TensorLike>(
  logits: T,
  targets: TensorLike,
  options?: TokenLogprobsOptions,
): TokenLogprobsResult<T> {
  const opts = optionsArg(options);
  const { x, y } = logitsAndTargets(logits, targets, opts.dtype);
  const temperature = temperatureOption(opts.temperature);
  const entropy = boolOption(opts.entropy, 'entropy', false);
  const native = addon().tokenLogprobs(x, y, { temperature, entropy });
  const asTensor = isTensor(logits);
  const result: TokenLogprobsResult<T> = {
    logprobs: output(native.logprobs, asTensor) as Out<T>,
    lse: output(native.lse, asTensor) as Out<T>,
  };
  if (entropy) result.entropy = output(native.entropy, asTensor) as Out<T>;
  return result;
}

/**
 * Gradient of L with respect to the raw logits, given ∂L/∂logprobs (and optionally
 * ∂L/∂entropy) per row: (g·1[v=y] − p_v (g + e (log p_v + H))) / τ. One pass; with
 * inPlace it overwrites the logits and returns them.
 */
export function tokenLogprobsBackward<T extends TensorLike>(
  logits: T,
  targets: TensorLike,
  lse: TensorLike,
  gradLogprobs: TensorLike,
  options?: TokenLogprobsBackwardOptions,
): GradOut<T> {
  const opts = optionsArg(options);
  const { x, y } = logitsAndTargets(logits, targets, opts.dtype);
  const rows = y.shape[0];
  const l = tensorArg(lse, 'lse', ['f32'], [rows]);
  const g = tensorArg(gradLogprobs, 'gradLogprobs', ['f32'], [rows]);
  let ge: Tensor | undefined, h: Tensor | undefined;
  if (opts.gradEntropy !== undefined) {
    if (opts.entropy === undefined)
      throw new TypeError('gradEntropy: needs `entropy` too (the entropy output of tokenLogprobs(..., {entropy: true}))');
    ge = tensorArg(opts.gradEntropy, 'gradEntropy', ['f32'], [rows]);
    h = tensorArg(opts.entropy, 'entropy', ['f32'], [rows]);
  }
  sameDevice({ logits: x, lse: l, gradLogprobs: g, gradEntropy: ge, entropy: h });
  const temperature = temperatureOption(opts.temperature);
  const inPlace = boolOption(opts.inPlace, 'inPlace', false);
  checkFinite(l, 'lse');
  checkFinite(g, 'gradLogprobs');
  if (ge && h) {
    checkFinite(ge, 'gradEntropy');
    checkFinite(h, 'entropy');
  }
  const native = addon().tokenLogprobsBackward(x, y, l, g, { gradEntropy: ge, entropy: h, temperature, inPlace });
  if (inPlace) return logits as unknown as GradOut<T>;
  return output(native, isTensor(logits)) as GradOut<T>;
}
