// Optimiser leaves (engine-internal, not exported from the package index): a fused AdamW
// step, the sum of squares for global grad-norm clipping, and an in-place scale. Buffers
// are flat: f32 Tensors of any shape or Float32Arrays, all on one device. Native twins:
// native/ops/adamw.cc (CPU) and kernels/adamw.cu (CUDA), with the same bits.
import { addon } from '../native.js';
import { Tensor } from '../tensor.js';
import { numberOption, optionsArg, sameDevice } from './validate.js';

export type FlatF32 = Tensor | Float32Array;

export interface AdamwOptions {
  /** learning rate (required) */
  lr: number;
  /** step count including this update: 1 for the first (required) */
  step: number;
  /** default 0.9 */
  beta1?: number;
  /** default 0.999 */
  beta2?: number;
  /** added to √v̂; default 1e-8 */
  eps?: number;
  /** decoupled weight decay: p ← p·(1 − lr·weightDecay) before the update; default 0.01 (torch's) */
  weightDecay?: number;
}

function flat(value: unknown, name: string): Tensor {
  if (value instanceof Tensor) {
    value.assertAlive(name);
    if (value.dtype !== 'f32') throw new TypeError(`${name}: expected dtype f32, got ${value.dtype}`);
    return value;
  }
  if (value instanceof Float32Array) return Tensor.from(value);
  const got = value === null ? 'null' : ArrayBuffer.isView(value) ? value.constructor.name : typeof value;
  throw new TypeError(`${name}: expected a Float32Array or an f32 Tensor, got ${got}`);
}

/**
 * One torch.optim.AdamW step, in place on param, expAvg and expAvgSq (amsgrad off):
 *   p ← p·(1 − lr·wd);  m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²
 *   p ← p − lr/(1 − β1^step) · m / (√v / √(1 − β2^step) + eps)
 * All four buffers hold the same number of f32 values; expAvg and expAvgSq start at zero.
 */
export function adamwStep(param: FlatF32, grad: FlatF32, expAvg: FlatF32, expAvgSq: FlatF32, options: AdamwOptions): void {
  const opts = optionsArg(options);
  const lr = numberOption(opts.lr, 'lr', NaN, { min: 0 });
  if (Number.isNaN(lr)) throw new TypeError('lr: required');
  if (opts.step === undefined) throw new TypeError('step: required (1 for the first update)');
  const step = numberOption(opts.step, 'step', 1, { min: 1, integer: true });
  const beta1 = numberOption(opts.beta1, 'beta1', 0.9, { min: 0 });
  const beta2 = numberOption(opts.beta2, 'beta2', 0.999, { min: 0 });
  if (beta1 >= 1) throw new RangeError(`beta1: expected a number in [0, 1), got ${beta1}`);
  if (beta2 >= 1) throw new RangeError(`beta2: expected a number in [0, 1), got ${beta2}`);
  const eps = numberOption(opts.eps, 'eps', 1e-8, { above: 0 });
  const weightDecay = numberOption(opts.weightDecay, 'weightDecay', 0.01, { min: 0 });
  const p = flat(param, 'param'), g = flat(grad, 'grad'), m = flat(expAvg, 'expAvg'), v = flat(expAvgSq, 'expAvgSq');
  sameDevice({ param: p, grad: g, expAvg: m, expAvgSq: v });
  for (const [name, t] of [['grad', g], ['expAvg', m], ['expAvgSq', v]] as const)
    if (t.numel !== p.numel) throw new RangeError(`${name}: has ${t.numel} elements, param has ${p.numel}`);
  addon().adamwStep(p, g, m, v, { lr, beta1, beta2, eps, weightDecay, step });
}

/**
 * Σ x² accumulated in double, with the same bits for the same values whatever the thread
 * count. NaN or ±Inf anywhere gives a non-finite result: check it before clipping.
 */
export function gradSumSquares(x: FlatF32): number {
  return addon().gradSumSquares(flat(x, 'x')) as number;
}

/** x ← x·c in place (c rounded to f32), e.g. grads ·= maxNorm / totalNorm when clipping. */
export function scaleInPlace(x: FlatF32, c: number): void {
  const t = flat(x, 'x');
  const factor = numberOption(c, 'c', NaN);
  if (Number.isNaN(factor)) throw new TypeError('c: expected a finite number');
  addon().scaleInPlace(t, factor);
}
