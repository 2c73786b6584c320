// embeddingForward / embeddingBackward: token embedding lookup of the Qwen2/Llama engine
// and its deterministic scatter-add backward. Engine leaf op (f32): native twins
// native/ops/embedding.cc (CPU) and kernels/embedding.cu (CUDA). Internal: not exported
// from the package index.
import { addon } from '../native.js';
import { Tensor } from '../tensor.js';
import { checkIdRange, numberOption, optionsArg, sameDevice, tensorArg, type TensorLike } from './validate.js';

function tableArg(table: unknown, name: string): Tensor {
  if (!(table instanceof Tensor)) throw new TypeError(`${name}: expected a Tensor of shape [vocab, dim] (a TypedArray has no shape)`);
  const t = tensorArg(table, name, ['f32'], table.shape);
  if (t.shape.length !== 2) throw new RangeError(`${name}: expected shape [vocab, dim], got [${t.shape.join(', ')}]`);
  return t;
}

function idsArg(ids: TensorLike): Tensor {
  return tensorArg(ids, 'ids', ['i32'], ids instanceof Tensor ? ids.shape : [null]);
}

/** table [V, D], ids i32 of any shape (a plain Int32Array is 1-D) → rows [...ids.shape, D]. */
export function embeddingForward(table: Tensor, ids: TensorLike): Tensor {
  const t = tableArg(table, 'table');
  const i = idsArg(ids);
  sameDevice({ table: t, ids: i });
  checkIdRange(i, 'ids', t.shape[0], 'token id');
  return Tensor.fromNative(addon().embeddingForward(t, i));
}

export interface EmbeddingBackwardOptions {
  /** rows of the table; required unless dtable is given */
  vocab?: number;
  /** [V, D] gradient buffer to ACCUMULATE into (+=) and return (e.g. shared with a tied LM head) */
  dtable?: Tensor;
}

/** d loss / d table: scatter-adds dout [...ids.shape, D] into rows ids (deterministically). */
export function embeddingBackward(ids: TensorLike, dout: Tensor, options?: EmbeddingBackwardOptions): Tensor {
  const opts = optionsArg(options);
  const i = idsArg(ids);
  if (!(dout instanceof Tensor)) throw new TypeError('dout: expected a Tensor of shape [...ids.shape, dim]');
  const d = tensorArg(dout, 'dout', ['f32'], [...i.shape, dout.shape[dout.shape.length - 1] ?? 0]);
  const dt = opts.dtable === undefined ? undefined : tableArg(opts.dtable, 'dtable');
  if (dt && dt.shape[1] !== d.shape[d.shape.length - 1])
    throw new RangeError(`dtable: expected ${d.shape[d.shape.length - 1]} columns (the last dim of dout), got [${dt.shape.join(', ')}]`);
  let vocab: number;
  if (dt) {
    vocab = dt.shape[0];
    if (opts.vocab !== undefined && opts.vocab !== vocab) throw new RangeError(`vocab: ${opts.vocab} does not match dtable's ${vocab} rows`);
  } else {
    if (opts.vocab === undefined) throw new TypeError('vocab: required when no dtable is given');
    vocab = numberOption(opts.vocab, 'vocab', 0, { min: 1, integer: true, max: 2 ** 31 - 1 });
  }
  sameDevice({ ids: i, dout: d, dtable: dt });
  checkIdRange(i, 'ids', vocab, 'token id');
  const native = addon().embeddingBackward(i, d, { vocab }, dt);
  return dt ?? Tensor.fromNative(native);
}
