// gatherRows / scatterRows: rows of a [rows, cols] f32 tensor picked by a host index, on
// the tensor's own device (the token pass moves completion positions between the padded
// [B·T, D] layout and a packed [N, D] one). Native twins: native/ops/rows.cc (CPU),
// kernels/rows.cu (CUDA).
import { addon } from '../native.js';
import { Tensor } from '../tensor.js';
import { tensorArg } from './validate.js';

/** out[i, :] = src[index[i], :], a new tensor [index.length, cols] on src's device. */
export function gatherRows(src: Tensor, index: Int32Array): Tensor {
  const s = tensorArg(src, 'src', ['f32'], [null, null]);
  if (!(index instanceof Int32Array)) throw new TypeError('index: expected an Int32Array of row numbers');
  return Tensor.fromNative(addon().gatherRows(s, Tensor.from(index)));
}

/** A new [rows, cols] tensor on src's device: 0, but out[index[i], :] = src[i, :] (distinct rows). */
export function scatterRows(src: Tensor, index: Int32Array, rows: number): Tensor {
  const s = tensorArg(src, 'src', ['f32'], [index.length, null]);
  if (!(index instanceof Int32Array)) throw new TypeError('index: expected an Int32Array of row numbers');
  return Tensor.fromNative(addon().scatterRows(s, Tensor.from(index), rows));
}
