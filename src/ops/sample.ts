// sampleRows: the policy engine's next-token sampler applied to rows of logits on any
// device (the CPU twin in native/engine/backend_cpu.cc, the CUDA twin in kernels/sample.cu),
// so that the two can be compared. Semantics: SampleArgs in native/engine/backend.h.
// Internal: not exported from the package index.
import { addon } from '../native.js';
import { Tensor } from '../tensor.js';
import { numberOption, optionsArg, tensorArg } from './validate.js';

export interface SampleOptions {
  /** 0: greedy (lowest index among the largest logits); default 1 */
  temperature?: number;
  /** keep the k largest logits; 0 (default): all */
  topK?: number;
  /** keep the smallest most-probable set reaching this mass; 1 (default): all */
  topP?: number;
  /** integer in [0, 2^53) */
  seed?: number;
  /** the generator's identity of each row; default 0..rows-1 */
  rowKeys?: ArrayLike<number>;
  /** the generator's counter (the decoding step); default 0 */
  step?: number;
}

export interface SampleResult {
  tokens: Int32Array;
  /** log-prob of each token under the distribution it was drawn from (softmax(logits) when greedy) */
  logprobs: Float32Array;
}

/** One draw per row of logits [rows, vocab] (f32, on the CPU or a CUDA device). */
export function sampleRows(logits: Tensor, options?: SampleOptions): SampleResult {
  const opts = optionsArg(options);
  if (!(logits instanceof Tensor)) throw new TypeError('logits: expected a Tensor of shape [rows, vocab]');
  const t = tensorArg(logits, 'logits', ['f32'], [null, null]);
  const [rows, vocab] = t.shape;
  if (vocab < 1) throw new RangeError('logits: expected a vocabulary of at least 1');
  const maxInt = Number.MAX_SAFE_INTEGER;
  const native = {
    temperature: numberOption(opts.temperature, 'temperature', 1, { min: 0 }),
    topK: numberOption(opts.topK, 'topK', 0, { min: 0, integer: true, max: 2 ** 31 - 1 }),
    topP: numberOption(opts.topP, 'topP', 1, { above: 0, max: 1 }),
    seed: numberOption(opts.seed, 'seed', 0, { min: 0, integer: true, max: maxInt }),
    step: numberOption(opts.step, 'step', 0, { min: 0, integer: true, max: maxInt }),
    rowKeys: undefined as number[] | undefined,
  };
  if (opts.rowKeys !== undefined) {
    if (opts.rowKeys.length !== rows) throw new RangeError(`rowKeys: expected one key per row (${rows}), got ${opts.rowKeys.length}`);
    native.rowKeys = Array.from(opts.rowKeys, (k, i) => numberOption(k, `rowKeys[${i}]`, 0, { min: 0, integer: true, max: maxInt }));
  }
  const out = addon().sampleRows(t, native);
  return { tokens: out.tokens as Int32Array, logprobs: out.logprobs as Float32Array };
}
