// rmsNormForward / rmsNormBackward: RMSNorm of the Qwen2/Llama engine,
// y = x · rsqrt(mean(x²) + eps) · w over rows. Engine leaf op (f32): native twins
// native/ops/rms_norm.cc (CPU) and kernels/rms_norm.cu (CUDA). Internal: not exported
// from the package index.
import { addon } from '../native.js';
import { Tensor } from '../tensor.js';
import { isTensor, numberOption, optionsArg, output, sameDevice, tensorArg, type Out, type TensorLike } from './validate.js';

export interface RmsNormOptions {
  /** added to mean(x²) under the square root; default 1e-6 (Qwen2's rms_norm_eps) */
  eps?: number;
}

export interface RmsNormForwardResult<T> {
  /** [rows, dim] */
  y: Out<T>;
  /** [rows]: rsqrt(mean(x²) + eps), what the backward needs */
  rstd: Out<T>;
}

function weightArg(weight: TensorLike): Tensor {
  const w = tensorArg(weight, 'weight', ['f32'], [null]);
  if (w.shape[0] < 1) throw new RangeError('weight: expected at least one element (the feature dimension)');
  return w;
}

/** x [rows, dim] (a Float32Array is read as rows of weight.length), weight [dim]. */
export function rmsNormForward<T extends TensorLike>(x: T, weight: TensorLike, options?: RmsNormOptions): RmsNormForwardResult<T> {
  const opts = optionsArg(options);
  const w = weightArg(weight);
  const xt = tensorArg(x, 'x', ['f32'], [null, w.shape[0]]);
  sameDevice({ x: xt, weight: w });
  const eps = numberOption(opts.eps, 'eps', 1e-6, { above: 0 });
  const native = addon().rmsNormForward(xt, w, { eps });
  const asTensor = isTensor(x);
  return { y: output(native.y, asTensor), rstd: output(native.rstd, asTensor) } as RmsNormForwardResult<T>;
}

export interface RmsNormBackwardOptions {
  /** [dim] gradient buffer to ACCUMULATE into (+=) and return; default a fresh zeroed one */
  dweight?: TensorLike;
}

export interface RmsNormBackwardResult<T> {
  /** [rows, dim], d loss / d x */
  dx: Out<T>;
  /** [dim]: options.dweight itself when given (accumulated into), else a new buffer */
  dweight: Out<T> | TensorLike;
}

export function rmsNormBackward<T extends TensorLike>(
  x: T,
  weight: TensorLike,
  rstd: TensorLike,
  dy: TensorLike,
  options?: RmsNormBackwardOptions,
): RmsNormBackwardResult<T> {
  const opts = optionsArg(options);
  const w = weightArg(weight);
  const D = w.shape[0];
  const xt = tensorArg(x, 'x', ['f32'], [null, D]);
  const rows = xt.shape[0];
  const r = tensorArg(rstd, 'rstd', ['f32'], [rows]);
  const g = tensorArg(dy, 'dy', ['f32'], [rows, D]);
  const dw = opts.dweight === undefined ? undefined : tensorArg(opts.dweight, 'dweight', ['f32'], [D]);
  sameDevice({ x: xt, weight: w, rstd: r, dy: g, dweight: dw });
  const native = addon().rmsNormBackward(xt, w, r, g, dw);
  const asTensor = isTensor(x);
  return {
    dx: output(native.dx, asTensor),
    dweight: opts.dweight ?? output(native.dweight, asTensor),
  } as RmsNormBackwardResult<T>;
}
