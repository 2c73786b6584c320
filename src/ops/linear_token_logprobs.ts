// linearTokenLogprobs: the LM head and the token log-prob in one pass (spec §1,
// fused-linear form). logits = hidden · weightᵀ / τ are formed tile by tile and never
// held whole, so memory stays O(N + tile) instead of the N × V logits (2.5 GB at
// N = 4096, V = 151936). A caller with the memory to spare can ask the CPU forward to keep
// them ({saveLogits: true}, 4·N·V bytes) and hand them to the backward ({saved}), which then
// runs two GEMMs instead of three, with the same bits. Native twins: native/ops/linear_token_logprobs.cc (CPU),
// kernels/linear_token_logprobs.cu (CUDA).
import type { FloatDType } from '../dtype.js';
import { addon } from '../native.js';
import { Tensor } from '../tensor.js';
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
  /**
   * keep the scaled logits (4·N·V bytes) for linearTokenLogprobsBackward, which then reads
   * them instead of recomputing them: the result's `saved`. CPU tensors only (on CUDA the
   * backward always recomputes and `saved` is absent); default false
   */
  saveLogits?: boolean;
}

/**
 * The logits a CPU forward kept ({saveLogits: true}), bound to that call's hidden, weight,
 * targets and temperature: pass it to linearTokenLogprobsBackward with those same inputs,
 * unchanged since (as PyTorch's saved tensors, a weight updated in between makes it stale).
 * dispose() frees it at once rather than at garbage collection.
 */
export class SavedLogits {
  readonly #logits: Tensor;
  // The forward's own arguments, compared by identity (kept private so that nothing that
  // walks a result's fields, such as a dispose-everything helper, reaches the inputs).
  readonly #inputs: readonly [unknown, unknown, unknown];
  /** The temperature the logits were divided by. */
  readonly temperature: number;
  constructor(logits: Tensor, hidden: unknown, weight: unknown, targets: unknown, temperature: number) {
    this.#logits = logits;
    this.#inputs = [hidden, weight, targets];
    this.temperature = temperature;
  }
  /** Bytes held. */
  get bytes(): number {
    return this.#logits.disposed ? 0 : this.#logits.numel * 4;
  }
  get disposed(): boolean {
    return this.#logits.disposed;
  }
  /** @internal which of hidden, weight and targets is not the forward's own, if any */
  differingInput(hidden: unknown, weight: unknown, targets: unknown): 'hidden' | 'weight' | 'targets' | undefined {
    const [h, w, t] = this.#inputs;
    return h !== hidden ? 'hidden' : w !== weight ? 'weight' : t !== targets ? 'targets' : undefined;
  }
  /** @internal the backward's operand */
  tensor(): Tensor {
    if (this.#logits.disposed) throw new TypeError('saved: these saved logits were disposed; run the forward again');
    return this.#logits;
  }
  dispose(): void {
    this.#logits.dispose();
  }
}

export interface LinearTokenLogprobsResult<T> {
  /** log p(target) per row, f32 */
  logprobs: Out<T>;
  /** entropy per row (only with {entropy: true}), f32 */
  entropy?: Out<T>;
  /** log-sum-exp of the scaled logits per row, f32: the backward needs it */
  lse: Out<T>;
  /** the logits kept for the backward (only with {saveLogits: true} on CPU tensors) */
  saved?: SavedLogits;
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
  /** the forward's `saved` for these same inputs: read instead of recomputing the logits */
  saved?: SavedLogits;
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
  const saveLogits = boolOption(opts.saveLogits, 'saveLogits', false);
  const native = addon().linearTokenLogprobs(o.hidden, o.weight, o.targets, { temperature, entropy, saveLogits });
  const asTensor = isTensor(hidden);
  const result: Record<string, unknown> = { logprobs: output(native.logprobs, asTensor), lse: output(native.lse, asTensor) };
  if (entropy) result.entropy = output(native.entropy, asTensor);
  if (native.savedLogits !== undefined)
    result.saved = new SavedLogits(Tensor.fromNative(native.savedLogits), hidden, weight, targets, temperature);
  return result as unknown as LinearTokenLogprobsResult<T>;
}

// The saved logits are only valid for the very inputs of the forward that kept them.
function savedLogitsOf(saved: unknown, hidden: unknown, weight: unknown, targets: unknown, temperature: number): Tensor {
  if (!(saved instanceof SavedLogits))
    throw new TypeError('saved: expected the `saved` result of linearTokenLogprobs(..., {saveLogits: true})');
  const differs = saved.differingInput(hidden, weight, targets);
  if (differs !== undefined)
    throw new TypeError(`saved: kept for another ${differs}; pass the forward's own hidden, weight and targets, or no saved`);
  if (saved.temperature !== temperature)
    throw new RangeError(`saved: kept at temperature ${saved.temperature}, not ${temperature}`);
  return saved.tensor();
}

/**
 * Gradients of L through linearTokenLogprobs, given ∂L/∂logprobs (and optionally
 * ∂L/∂entropy): recomputes the logits tile by tile, or reads the forward's `saved` ones.
 * Both gradients are f32 and include the 1/τ factor.
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
  if (opts.saved !== undefined)
    nativeOpts.savedLogits = savedLogitsOf(opts.saved, hidden, weight, targets, nativeOpts.temperature as number);
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
