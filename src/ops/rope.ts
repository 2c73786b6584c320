// ropeForward / ropeBackward / ropeTable: rotary position embedding of the Qwen2/Llama
// engine, Hugging Face rotate_half convention (see native/ops/rope.h for the exact
// numerics). Rotates q and k IN PLACE; the backward rotates gradients by −angle.
// Engine leaf op (f32): native twins native/ops/rope.cc (CPU) and kernels/rope.cu
// (CUDA). Internal: not exported from the package index.
import { addon } from '../native.js';
import { Tensor, parseDevice, type Device } from '../tensor.js';
import { numberOption, optionsArg, sameDevice, tensorArg, type TensorLike } from './validate.js';

export interface RopeOptions {
  /** rope_theta of the model config; default 10000. Ignored when tables are given. */
  theta?: number;
  /** cos table [P, headDim/2] from ropeTable (with sin); positions must then be < P */
  cos?: TensorLike;
  sin?: TensorLike;
}

/** A float Tensor of rank >= 3 laid out [..., heads, headDim]. */
function headsArg(value: unknown, name: string): Tensor {
  if (!(value instanceof Tensor))
    throw new TypeError(`${name}: expected a Tensor of shape [..., heads, headDim] (a TypedArray has no shape)`);
  const t = tensorArg(value, name, ['f32'], value.shape);
  if (t.shape.length < 3) throw new RangeError(`${name}: expected shape [..., heads, headDim] with a leading dim, got [${t.shape.join(', ')}]`);
  return t;
}

function rope(which: 'ropeForward' | 'ropeBackward', q: Tensor, k: Tensor | null | undefined, positions: TensorLike, options?: RopeOptions): void {
  const [qn, kn] = which === 'ropeForward' ? ['q', 'k'] : ['dq', 'dk'];
  const opts = optionsArg(options);
  const qt = headsArg(q, qn);
  const lead = qt.shape.slice(0, -2);
  const hd = qt.shape[qt.shape.length - 1];
  if (hd < 2 || hd % 2 !== 0) throw new RangeError(`${qn}: headDim must be even and >= 2, got ${hd}`);
  let kt: Tensor | undefined;
  if (k !== null && k !== undefined) {
    kt = headsArg(k, kn);
    if (kt.shape.length !== qt.shape.length || kt.shape.some((d, i) => i !== kt!.shape.length - 2 && d !== qt.shape[i]))
      throw new RangeError(`${kn}: expected shape [${lead.join(', ')}, kvHeads, ${hd}] to match ${qn}, got [${kt.shape.join(', ')}]`);
  }
  const pos = tensorArg(positions, 'positions', ['i32'], lead);
  const theta = numberOption(opts.theta, 'theta', 10000, { above: 1 });
  if ((opts.cos === undefined) !== (opts.sin === undefined))
    throw new TypeError(`${opts.cos === undefined ? 'cos' : 'sin'}: cos and sin tables go together`);
  const cos = opts.cos === undefined ? undefined : tensorArg(opts.cos, 'cos', ['f32'], [null, hd / 2]);
  const sin = opts.sin === undefined ? undefined : tensorArg(opts.sin, 'sin', ['f32'], cos!.shape);
  sameDevice({ [qn]: qt, [kn]: kt, positions: pos, cos, sin });
  if (!pos.isCuda) {
    const limit = cos ? cos.shape[0] : 2 ** 31;
    const data = pos.cpuData('positions') as Int32Array;
    for (let i = 0; i < data.length; i++)
      if (data[i] < 0 || data[i] >= limit)
        throw new RangeError(`positions: position ${data[i]} at token ${i} is outside [0, ${limit})${cos ? ' (the rows of the cos/sin tables)' : ''}`);
  }
  addon()[which](qt, kt ?? null, pos, { theta, cos, sin });
}

/**
 * Rotates q [..., Hq, hd] and k [..., Hkv, hd] in place by their positions ([...]: [B, T]
 * for prefill, [B] for one decode step). Pass k = null to rotate q alone.
 */
export function ropeForward(q: Tensor, k: Tensor | null, positions: TensorLike, options?: RopeOptions): void {
  rope('ropeForward', q, k, positions, options);
}

/** The backward of ropeForward: rotates the gradients dq, dk in place by −angle. */
export function ropeBackward(dq: Tensor, dk: Tensor | null, positions: TensorLike, options?: RopeOptions): void {
  rope('ropeBackward', dq, dk, positions, options);
}

/**
 * cos/sin tables [positions, headDim/2] for positions 0 .. positions-1, for reuse across
 * calls, built on `device` (default 'cpu'): the same values on every device.
 */
export function ropeTable(theta: number, headDim: number, positions: number, device: Device = 'cpu'): { cos: Tensor; sin: Tensor } {
  const required = (value: unknown, name: string) => {
    if (value === undefined) throw new TypeError(`${name}: required`);
  };
  required(theta, 'theta');
  required(headDim, 'headDim');
  required(positions, 'positions');
  numberOption(theta, 'theta', 0, { above: 1 });
  numberOption(headDim, 'headDim', 0, { min: 2, integer: true });
  if (headDim % 2 !== 0) throw new RangeError(`headDim: must be even, got ${headDim}`);
  numberOption(positions, 'positions', 0, { min: 0, integer: true, max: 2 ** 31 - 1 });
  const native = addon().ropeTable(theta, headDim, positions, parseDevice(device));
  return { cos: Tensor.fromNative(native.cos), sin: Tensor.fromNative(native.sin) };
}
