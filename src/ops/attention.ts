// attentionForward / attentionBackward / attentionDecode: causal grouped-query
// self-attention of the Qwen2/Llama engine over right-padded rows, and its one-position
// KV-cache decode. See native/ops/attention.h for the contract (padding, lse, decode ==
// forward bit for bit). Engine leaf op (f32): CPU twin native/ops/attention.cc, CUDA twin
// kernels/attention.cu (CUDA tensors; every argument on one device).
// Internal: not exported from the package index.
import { addon } from '../native.js';
import { Tensor } from '../tensor.js';
import { numberOption, optionsArg, sameDevice, tensorArg, type TensorLike } from './validate.js';

export interface AttentionOptions {
  /** multiplies q·k; default 1/sqrt(headDim) */
  scale?: number;
}

export interface AttentionForwardResult {
  /** [B, T, Hq, hd]; 0 at padded positions t >= lengths[b] */
  out: Tensor;
  /** [B, Hq, T]: logsumexp of each query row's scores (0 at padded positions), for the backward */
  lse: Tensor;
}

export interface AttentionGradients {
  /** [B, T, Hq, hd] */
  dq: Tensor;
  /** [B, T, Hkv, hd], summed over the query heads sharing each kv head */
  dk: Tensor;
  dv: Tensor;
}

function shaped(value: unknown, name: string, rank: number, what: string): Tensor {
  if (!(value instanceof Tensor)) throw new TypeError(`${name}: expected a Tensor of shape ${what} (a TypedArray has no shape)`);
  const t = tensorArg(value, name, ['f32'], value.shape);
  if (t.shape.length !== rank) throw new RangeError(`${name}: expected shape ${what}, got [${t.shape.join(', ')}]`);
  return t;
}

function checkHeads(hq: number, hkv: number, hd: number, kname: string): void {
  if (hkv < 1 || hq < 1 || hq % hkv !== 0)
    throw new RangeError(`${kname}: kv heads (${hkv}) must be >= 1 and divide the query heads (${hq})`);
  if (hd < 1) throw new RangeError('q: headDim must be >= 1');
}

function lengthsArg(lengths: TensorLike, batch: number, limit: number, what: string): Tensor {
  const t = tensorArg(lengths, 'lengths', ['i32'], [batch]);
  if (!t.isCuda) {
    const data = t.cpuData('lengths') as Int32Array;
    for (let b = 0; b < data.length; b++)
      if (data[b] < 0 || data[b] > limit)
        throw new RangeError(`lengths: length ${data[b]} of row ${b} is outside [0, ${limit}] (${what})`);
  }
  return t;
}

function scaleOption(opts: Partial<AttentionOptions>, hd: number): number {
  return numberOption(opts.scale, 'scale', 1 / Math.sqrt(hd), { above: 0 });
}

interface Checked {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  lengths: Tensor;
  scale: number;
}

function checkQkv(q: Tensor, k: Tensor, v: Tensor, lengths: TensorLike, options?: AttentionOptions): Checked {
  const opts = optionsArg(options);
  const qt = shaped(q, 'q', 4, '[batch, seq, heads, headDim]');
  const [B, T, Hq, hd] = qt.shape;
  const kt = shaped(k, 'k', 4, `[${B}, ${T}, kvHeads, ${hd}]`);
  if (kt.shape[0] !== B || kt.shape[1] !== T || kt.shape[3] !== hd)
    throw new RangeError(`k: expected shape [${B}, ${T}, kvHeads, ${hd}] to match q, got [${kt.shape.join(', ')}]`);
  checkHeads(Hq, kt.shape[2], hd, 'k');
  const vt = tensorArg(v, 'v', ['f32'], kt.shape);
  const len = lengthsArg(lengths, B, T, 'the sequence length');
  return { q: qt, k: kt, v: vt, lengths: len, scale: scaleOption(opts, hd) };
}

/**
 * q [B, T, Hq, hd], k and v [B, T, Hkv, hd] (Hq a multiple of Hkv), lengths [B] in [0, T]:
 * query t of row b attends keys 0..t; positions t >= lengths[b] are padding.
 */
export function attentionForward(q: Tensor, k: Tensor, v: Tensor, lengths: TensorLike, options?: AttentionOptions): AttentionForwardResult {
  const c = checkQkv(q, k, v, lengths, options);
  sameDevice({ q: c.q, k: c.k, v: c.v, lengths: c.lengths });
  const native = addon().attentionForward(c.q, c.k, c.v, c.lengths, { scale: c.scale });
  return { out: Tensor.fromNative(native.out), lse: Tensor.fromNative(native.lse) };
}

/** Gradients of attentionForward given its inputs, its out and lse, and d loss / d out. */
export function attentionBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  lengths: TensorLike,
  out: Tensor,
  lse: Tensor,
  dout: Tensor,
  options?: AttentionOptions,
): AttentionGradients {
  const c = checkQkv(q, k, v, lengths, options);
  const [B, T, Hq] = c.q.shape;
  const o = tensorArg(out, 'out', ['f32'], c.q.shape);
  const l = tensorArg(lse, 'lse', ['f32'], [B, Hq, T]);
  const d = tensorArg(dout, 'dout', ['f32'], c.q.shape);
  sameDevice({ q: c.q, k: c.k, v: c.v, lengths: c.lengths, out: o, lse: l, dout: d });
  const native = addon().attentionBackward(c.q, c.k, c.v, c.lengths, o, l, d, { scale: c.scale });
  return { dq: Tensor.fromNative(native.dq), dk: Tensor.fromNative(native.dk), dv: Tensor.fromNative(native.dv) };
}

/**
 * One decode step: q [B, Hq, hd] (the new token of each row, already rotated) against a
 * KV cache [B, maxSeq, Hkv, hd] whose first lengths[b] entries (the new token's own k, v
 * included) are valid. Returns [B, Hq, hd]; rows with length 0 give 0.
 */
export function attentionDecode(q: Tensor, kCache: Tensor, vCache: Tensor, lengths: TensorLike, options?: AttentionOptions): Tensor {
  const opts = optionsArg(options);
  const qt = shaped(q, 'q', 3, '[batch, heads, headDim]');
  const [B, Hq, hd] = qt.shape;
  const kc = shaped(kCache, 'kCache', 4, `[${B}, maxSeq, kvHeads, ${hd}]`);
  if (kc.shape[0] !== B || kc.shape[3] !== hd)
    throw new RangeError(`kCache: expected shape [${B}, maxSeq, kvHeads, ${hd}] to match q, got [${kc.shape.join(', ')}]`);
  checkHeads(Hq, kc.shape[2], hd, 'kCache');
  const vc = tensorArg(vCache, 'vCache', ['f32'], kc.shape);
  const len = lengthsArg(lengths, B, kc.shape[1], 'the cache size');
  sameDevice({ q: qt, kCache: kc, vCache: vc, lengths: len });
  return Tensor.fromNative(addon().attentionDecode(qt, kc, vc, len, { scale: scaleOption(opts, hd) }));
}
