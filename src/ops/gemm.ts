// gemm: C = alpha·op(A)·op(B) + beta·C in single precision, in place on C. An engine leaf
// (internal: not exported from the package index). Native twin: native/ops/gemm.cc.
//
// Matrices are row-major. Each argument is a rank-2 f32 Tensor (its shape gives rows and
// columns, its leading dimension is its column count), or a view {data, rows, cols, ld?}
// over a Float32Array or f32 Tensor of any shape, where ld (default cols) is the stride
// between rows, so a block of a larger matrix can be used in place. rows and cols are
// those of the stored matrix; transA / transB apply op(X) = Xᵀ on top.
import { addon } from '../native.js';
import { Tensor } from '../tensor.js';
import { boolOption, numberOption, optionsArg, sameDevice } from './validate.js';

export interface MatrixView {
  data: Tensor | Float32Array;
  rows: number;
  cols: number;
  /** elements between the starts of consecutive rows; default cols */
  ld?: number;
}

export type MatrixArg = Tensor | MatrixView;

export interface GemmOptions {
  /** use Aᵀ (A stored [K, M]); default false */
  transA?: boolean;
  /** use Bᵀ (B stored [N, K]); default false */
  transB?: boolean;
  /** default 1 */
  alpha?: number;
  /** default 0: C is overwritten and never read (it may hold anything, NaN included) */
  beta?: number;
  /**
   * CPU only, with transB: run the product the way rollouts do, over a copy of B in 16-row
   * panels (native/ops/gemm.h, pack_panels_cpu) made for this call. The same bits as without
   * it; exists so tests can hold the rollout path to that. Default false.
   */
  weightPanels?: boolean;
}

interface Resolved {
  tensor: Tensor;
  rows: number;
  cols: number;
  ld: number;
}

function dimension(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0)
    throw new RangeError(`${name}: expected a non-negative integer, got ${String(value)}`);
  return value;
}

function resolveMatrix(value: unknown, name: string): Resolved {
  if (value instanceof Tensor) {
    value.assertAlive(name);
    if (value.dtype !== 'f32') throw new TypeError(`${name}: expected dtype f32, got ${value.dtype}`);
    if (value.shape.length !== 2)
      throw new RangeError(`${name}: expected a rank-2 tensor [rows, cols], got shape [${value.shape.join(', ')}] (pass {data, rows, cols} to reshape)`);
    const [rows, cols] = value.shape;
    return { tensor: value, rows, cols, ld: cols };
  }
  if (ArrayBuffer.isView(value))
    throw new TypeError(`${name}: a ${value.constructor.name} needs its shape: pass {data, rows, cols}`);
  if (value === null || typeof value !== 'object')
    throw new TypeError(`${name}: expected a rank-2 f32 Tensor or {data, rows, cols, ld?}, got ${value === null ? 'null' : typeof value}`);
  const view = value as Partial<MatrixView>;
  const rows = dimension(view.rows, `${name}.rows`), cols = dimension(view.cols, `${name}.cols`);
  const ld = view.ld === undefined ? cols : dimension(view.ld, `${name}.ld`);
  if (ld < cols) throw new RangeError(`${name}.ld: ${ld} is smaller than ${name}.cols (${cols})`);
  let tensor: Tensor;
  if (view.data instanceof Tensor) {
    tensor = view.data;
    tensor.assertAlive(`${name}.data`);
    if (tensor.dtype !== 'f32') throw new TypeError(`${name}.data: expected dtype f32, got ${tensor.dtype}`);
  } else if (view.data instanceof Float32Array) {
    tensor = Tensor.from(view.data);
  } else {
    const got = view.data === undefined ? 'nothing' : ArrayBuffer.isView(view.data) ? (view.data as object).constructor.name : typeof view.data;
    throw new TypeError(`${name}.data: expected a Float32Array or an f32 Tensor, got ${got}`);
  }
  const need = rows === 0 || cols === 0 ? 0 : (rows - 1) * ld + cols;
  if (need > tensor.numel)
    throw new RangeError(`${name}: ${rows}×${cols} with ld ${ld} needs ${need} elements, ${name}.data has ${tensor.numel}`);
  return { tensor, rows, cols, ld };
}

/**
 * C ← alpha·op(A)·op(B) + beta·C, in place; returns c. With op(A) [M, K] and op(B) [K, N],
 * C must be [M, N]. Deterministic: the same inputs give the same bits for any thread count.
 *
 *   forward      y = x·Wᵀ       gemm(x, W, y, {transB: true})
 *   input grad   dX = dY·W      gemm(dY, W, dX)
 *   weight grad  dW += dYᵀ·X    gemm(dY, X, dW, {transA: true, beta: 1})
 */
export function gemm<C extends MatrixArg>(a: MatrixArg, b: MatrixArg, c: C, options?: GemmOptions): C {
  const opts = optionsArg(options);
  const transA = boolOption(opts.transA, 'transA', false);
  const transB = boolOption(opts.transB, 'transB', false);
  const alpha = numberOption(opts.alpha, 'alpha', 1);
  const beta = numberOption(opts.beta, 'beta', 0);
  const weightPanels = boolOption(opts.weightPanels, 'weightPanels', false);
  if (weightPanels && !transB) throw new RangeError('weightPanels: needs transB (B stored [N, K])');
  const A = resolveMatrix(a, 'a'), B = resolveMatrix(b, 'b'), Cm = resolveMatrix(c, 'c');
  sameDevice({ a: A.tensor, b: B.tensor, c: Cm.tensor });
  const m = transA ? A.cols : A.rows, k = transA ? A.rows : A.cols;
  const kb = transB ? B.cols : B.rows, n = transB ? B.rows : B.cols;
  const opName = (t: boolean, x: string) => (t ? `${x}ᵀ` : x);
  if (kb !== k)
    throw new RangeError(`b: ${opName(transB, 'b')} has ${kb} rows but ${opName(transA, 'a')} has ${k} columns`);
  if (Cm.rows !== m || Cm.cols !== n)
    throw new RangeError(`c: expected ${m}×${n} (${opName(transA, 'a')}·${opName(transB, 'b')}), got ${Cm.rows}×${Cm.cols}`);
  addon().gemm(A.tensor, B.tensor, Cm.tensor, { transA, transB, m, n, k, lda: A.ld, ldb: B.ld, ldc: Cm.ld, alpha, beta, weightPanels });
  return c;
}

/**
 * y ← x·wᵀ with the weights in bf16 (the GEMM of bf16 rollouts; native/ops/gemm_bf16.h
 * states its fixed summation order): x f32 [M, K], w bf16 [N, K], y f32 [M, N], all on
 * one device (the CUDA twin gives the CPU twin's bits). y is overwritten; returns y. Row i of y
 * depends on row i of x only.
 *
 * `bf16Activations: true` runs the variant bf16 rollouts use on CPUs with AVX512-BF16
 * (buildInfo().simd 'avx512+bf16'): x rounded to bf16 as well, bf16 dot products with f32
 * accumulation (vdpbf16ps), its own summation order (gemm_bf16.h) and so its own bits. A
 * RangeError naming bf16Activations on any other path or on CUDA.
 *
 * `weightPanels: true` (with bf16Activations) runs it the way bf16 rollouts do, over a copy
 * of w in bf16 panels (native/ops/gemm_bf16.h) made for this call: the same bits.
 */
export function gemmBf16Weights(x: Tensor, w: Tensor, y: Tensor, options: { bf16Activations?: boolean; weightPanels?: boolean } = {}): Tensor {
  for (const [name, t] of [['x', x], ['w', w], ['y', y]] as const) {
    if (!(t instanceof Tensor)) throw new TypeError(`${name}: expected a Tensor`);
    t.assertAlive(name);
  }
  const bf16Activations = options.bf16Activations ?? false;
  if (typeof bf16Activations !== 'boolean') throw new TypeError('bf16Activations: expected a boolean');
  const weightPanels = options.weightPanels ?? false;
  if (typeof weightPanels !== 'boolean') throw new TypeError('weightPanels: expected a boolean');
  addon().gemmBf16Weights(x, w, y, { bf16Activations, weightPanels });
  return y;
}

/**
 * The FLOP ceiling of this machine for the instructions gemm uses (16-wide f32 FMAs on
 * the AVX-512 path, 8-wide with AVX2), measured natively with register-only FMA chains on every kernel thread, in
 * GFLOP/s. Takes about `seconds` (default 0.25).
 */
export function measurePeakFlops(seconds?: number): number {
  if (seconds !== undefined) numberOption(seconds, 'seconds', 0.25, { above: 0, max: 10 });
  return addon().measurePeakFlops(seconds) as number;
}
