// swigluForward / swigluBackward: the gated MLP activation of the Qwen2/Llama engine,
// h = silu(gate) · up, elementwise. Engine leaf op (f32): native twins
// native/ops/swiglu.cc (CPU) and kernels/swiglu.cu (CUDA). Internal: not exported from
// the package index.
import { addon } from '../native.js';
import { isTensor, output, sameDevice, tensorArg, type Out, type TensorLike } from './validate.js';

/** gate and up share one shape (usually [rows, intermediate]); a Float32Array is 1-D. */
export function swigluForward<T extends TensorLike>(gate: T, up: TensorLike): Out<T> {
  const g = tensorArg(gate, 'gate', ['f32'], isTensor(gate) ? gate.shape : [null]);
  const u = tensorArg(up, 'up', ['f32'], g.shape);
  sameDevice({ gate: g, up: u });
  return output(addon().swigluForward(g, u), isTensor(gate)) as Out<T>;
}

export interface SwigluBackwardResult<T> {
  dgate: Out<T>;
  dup: Out<T>;
}

export function swigluBackward<T extends TensorLike>(gate: T, up: TensorLike, dh: TensorLike): SwigluBackwardResult<T> {
  const g = tensorArg(gate, 'gate', ['f32'], isTensor(gate) ? gate.shape : [null]);
  const u = tensorArg(up, 'up', ['f32'], g.shape);
  const d = tensorArg(dh, 'dh', ['f32'], g.shape);
  sameDevice({ gate: g, up: u, dh: d });
  const native = addon().swigluBackward(g, u, d);
  const asTensor = isTensor(gate);
  return { dgate: output(native.dgate, asTensor), dup: output(native.dup, asTensor) } as SwigluBackwardResult<T>;
}
