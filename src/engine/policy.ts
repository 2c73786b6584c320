// Policy: the native causal LM (Qwen2 / Llama family) as a typed TypeScript object.
//
// Parameters live in one flat f32 buffer laid out in parameterShapes() order (Hugging Face
// names), gradients in a second buffer of the same layout; parameters() and gradients()
// expose each tensor as a Float32Array view of those buffers (no copies), and
// parameterBuffer / gradientBuffer expose the flat buffers themselves, which is all a
// fused optimiser needs. The native engine (native/engine/model.cc) reads and writes the
// same memory.
//
// Training does not apply the LM head: forward() returns the final normed hidden states,
// the caller computes log-probs with linearTokenLogprobs(hidden, policy.lmHeadWeight,
// targets) and hands linearTokenLogprobsBackward's gradients back to backward():
//
//   const { hidden } = policy.forward({ ids });
//   const { logprobs, lse } = linearTokenLogprobs(hidden, policy.lmHeadWeight, targets);
//   const g = linearTokenLogprobsBackward(hidden, policy.lmHeadWeight, targets, lse, coeffs);
//   policy.backward(g.gradHidden, { gradLmHead: g.gradWeight });   // accumulates
import { randomBytes } from 'node:crypto';
import { ensureDir } from '../atomic_file.js';
import { join } from 'node:path';
import { addon, type NativeTensor } from '../native.js';
import { buildInfo } from '../build_info.js';
import { totalmem } from 'node:os';
import { MAX_CPU_ELEMENTS, Tensor, parseDevice, type Device } from '../tensor.js';
import { isTensor, optionsArg, numberOption, boolOption, temperatureOption, tensorArg, type TensorLike } from '../ops/validate.js';
import { eosTokenIds, loadConfig, parameterShapes, parseConfig, saveConfig, type ModelConfig } from './config.js';
import { forEachTensor, readSafetensorsDirHeaders, saveSafetensorsDir, type SafeTensor } from './safetensors.js';
import { fromFloat32Array } from '../dtype.js';

export interface PolicyOptions {
  /** 'cpu' (default) or 'cuda:N': where the weights, gradients and every activation live. */
  device?: Device | 'cuda';
  /**
   * Recompute each layer's activations during backward instead of keeping them from the
   * forward: training memory O(L·N·D) instead of O(L·N·(6D + 3I)), same bits, about a
   * third more compute. Default false; can be changed later with `policy.recompute = …`.
   */
  recompute?: boolean;
}

export interface RandomPolicyOptions extends PolicyOptions {
  /** seed of the initialisation (default 0): the same seed gives the same weights */
  seed?: number;
  /** std of the normal init of linear and embedding weights; default the config's
   * initializer_range, else 0.02 (as transformers initialises them) */
  initializerRange?: number;
}

export interface ParameterInfo {
  name: string;
  shape: number[];
  /** offset (in elements) into parameterBuffer / gradientBuffer */
  offset: number;
  numel: number;
}

/** A batch of token rows, right-padded. */
export interface Batch {
  /**
   * number[][]: one array per row (ragged; padded to the longest);
   * Int32Array: rows of equal stride T = ids.length / lengths.length (needs `lengths`);
   * Tensor i32 [B, T].
   */
  ids: readonly (readonly number[])[] | Int32Array | Tensor;
  /** real tokens per row (the rest is padding, never read); default: the row lengths
   * (number[][]) or T (Tensor) */
  lengths?: ArrayLike<number> | Tensor;
}

export interface ForwardResult {
  /**
   * Final normed hidden states [B·T, D] (row b·T + t), 0 at padded positions. A view of
   * the policy's own buffer: valid until the next forward(); copy it to keep it.
   */
  hidden: Tensor;
  batch: number;
  seq: number;
  lengths: Int32Array;
}

export interface BackwardOptions {
  /** ∂L/∂(LM-head weight) [V, D] (linearTokenLogprobsBackward's gradWeight), added into
   * the LM-head gradient — the embedding's when the head is tied */
  gradLmHead?: TensorLike;
}

export interface GenerateOptions {
  /** tokens to sample per row at most (a row ends earlier at a stop id) */
  maxNewTokens: number;
  /** 0: greedy (argmax); default 1 */
  temperature?: number;
  /** nucleus sampling: keep the most probable tokens up to this mass; default 1 (off) */
  topP?: number;
  /** keep only the k most probable tokens; default 0 (off) */
  topK?: number;
  /** a row stops after sampling one of these (it is included); default the config's
   * eos_token_id; [] disables stopping */
  stopIds?: readonly number[];
  /** seed of the sampler: the same seed and prompts give the same tokens; default random */
  seed?: number;
  /**
   * weights the rollout reads: 'f32' (default; untruncated log-probs are then bit for bit
   * sequenceLogprobs' on the CPU and with the own CUDA GEMM, equal to rounding under
   * cuBLASLt, which picks its kernel by shape), or 'bf16': every weight matrix from a bf16
   * copy of the parameters (rounded to nearest even at the start of the call), half the
   * bytes per decoding step;
   * norms, biases and the embedding stay f32 and the log-probs are the bf16 model's. On a
   * CPU with AVX512-BF16 (buildInfo().simd 'avx512+bf16') the activations entering each
   * weight matrix are rounded to bf16 too (bf16 dot products, f32 accumulation); other CPUs
   * keep them f32 — so the bits depend on the SIMD path. Same seed, same weights, same
   * precision, same machine → same tokens. CUDA keeps the activations f32 (the same bits as
   * the CPU's AVX2 path).
   */
  precision?: 'f32' | 'bf16';
}

export interface GenerateResult {
  /** the new tokens of each row (a final stop id included) */
  tokens: number[][];
  /**
   * log-prob of each new token under the distribution it was sampled from (temperature,
   * top-k and top-p applied and renormalised); with temperature 0, under the model's
   * unscaled distribution softmax(logits)
   */
  logprobs: Float32Array[];
  /** true: the row ended on a stop id; false: it reached maxNewTokens */
  stopped: boolean[];
}

export interface SequenceLogprobsOptions {
  /** logits are divided by it before the softmax; default 1 */
  temperature?: number;
}

export interface SaveOptions {
  /** split the weights into shards of at most this many bytes (transformers layout) */
  maxShardBytes?: number;
  /** 'f32' (default, exact) or 'bf16' (round to nearest even: half the bytes, as Hub checkpoints ship) */
  dtype?: 'f32' | 'bf16';
}

export interface PolicyStats {
  trainingBytes: number;
  trainingAllocations: number;
  inferenceBytes: number;
  inferenceAllocations: number;
  hiddenBytes: number;
  hiddenAllocations: number;
  recompute: boolean;
}

interface NativePolicy {
  layout(): { name: string; shape: number[]; offset: number }[];
  forward(ids: Tensor, lengths: Tensor): Float32Array | NativeTensor;
  backward(gradHidden: Tensor, options: { gradLmHead?: Tensor }): void;
  sequenceLogprobs(ids: Tensor, lengths: Tensor, promptLengths: Tensor, options: { temperature: number }): Float32Array;
  generate(ids: Tensor, lengths: Tensor, options: Record<string, unknown>): {
    tokens: Int32Array[];
    logprobs: Float32Array[];
    stopped: Uint8Array;
  };
  setRecompute(on: boolean): void;
  stats(): PolicyStats;
  dispose(): void;
}

// Tensors a checkpoint may carry that are not weights of the model.
const IGNORED_TENSORS = /\.rotary_emb\.inv_freq$/;
const SUPPORTED_FILE_DTYPES = new Set(['F32', 'BF16', 'F16']);

function resolveConfig(config: ModelConfig | Record<string, unknown>): ModelConfig {
  if (typeof config !== 'object' || config === null) throw new TypeError('config: expected a ModelConfig or a config.json object');
  return 'hiddenSize' in config && 'modelType' in config ? (config as ModelConfig) : parseConfig(config);
}

function resolveDevice(device: unknown): Device {
  const d = parseDevice((device ?? 'cpu') as string, 'device');
  if (d === 'cpu') return d;
  const info = buildInfo();
  if (!info.cudaDevices.some((x) => `cuda:${x.index}` === d))
    throw new Error(`device: ${d} is not available (${info.cudaUnavailable || `usable: ${info.cudaDevices.map((x) => `cuda:${x.index}`).join(', ')}`}); use device 'cpu'`);
  return d;
}

let f16Table: Float32Array | undefined;

/** Writes a checkpoint tensor into an f32 view: f32 copied, bf16 widened by a shift, f16 via a table. */
function convertInto(dst: Float32Array, t: SafeTensor): void {
  if (t.dtype === 'f32') {
    dst.set(t.data as Float32Array);
  } else if (t.dtype === 'bf16') {
    // bf16 is the top half of an f32: widening is exact.
    const out = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
    const bits = t.data as Uint16Array;
    for (let i = 0; i < bits.length; i++) out[i] = bits[i] << 16;
  } else {
    if (!f16Table) {
      f16Table = new Float32Array(65536);
      for (let h = 0; h < 65536; h++) f16Table[h] = f16Value(h);
    }
    const bits = t.data as Uint16Array, table = f16Table;
    for (let i = 0; i < bits.length; i++) dst[i] = table[bits[i]];
  }
}

function f16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1, exponent = (h >>> 10) & 0x1f, mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 31) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

function listNames(names: string[]): string {
  const shown = names.slice(0, 8).join(', ');
  return names.length > 8 ? `${shown} and ${names.length - 8} more` : shown;
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length), y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

function intOption(value: unknown, name: string, fallback: number, min: number): number {
  return numberOption(value, name, fallback, { integer: true, min });
}

export class Policy {
  readonly config: ModelConfig;
  readonly device: Device;
  /** every parameter, flat, in `layout` order */
  readonly parameterBuffer: Tensor;
  /** gradients, same layout; backward() accumulates into it */
  readonly gradientBuffer: Tensor;
  readonly layout: readonly ParameterInfo[];
  #native: NativePolicy;
  // Host views of the buffers (CPU policies only: a CUDA policy's weights stay on its device).
  #params: Map<string, Float32Array> | undefined;
  #grads: Map<string, Float32Array> | undefined;
  #lastForward: { rows: number } | undefined;
  #disposed = false;

  private constructor(config: ModelConfig, device: Device, recompute: boolean, initial?: Tensor) {
    this.config = config;
    this.device = device;
    const shapes = parameterShapes(config);
    let offset = 0;
    this.layout = shapes.map(({ name, shape }) => {
      const numel = shape.reduce((a, b) => a * b, 1);
      const info = { name, shape: [...shape], offset, numel };
      offset += numel;
      return info;
    });
    // Parameters and gradients are two f32 buffers of this size: refuse a config that could
    // not fit, with room left for activations and optimiser state, before allocating
    // (overcommitted memory fails later, and worse, than here).
    const bytes = offset * 8;
    if (!(offset <= MAX_CPU_ELEMENTS) || bytes > totalmem() / 2)
      throw new RangeError(`config: ${config.numHiddenLayers} layers, hidden_size ${config.hiddenSize}, vocab_size ${config.vocabSize} ` +
        `make ${offset} parameters (${(bytes / 2 ** 30).toFixed(1)} GiB with gradients); allowed: half of this machine's ${(totalmem() / 2 ** 30).toFixed(1)} GiB` +
        (offset > MAX_CPU_ELEMENTS ? ' and one buffer holds at most 2^32 values' : ''));
    this.parameterBuffer = initial ? initial.to(device) : Tensor.zeros([offset], 'f32', device);
    this.gradientBuffer = Tensor.zeros([offset], 'f32', device);
    const NativeClass = addon().PolicyModel as new (...args: unknown[]) => NativePolicy;
    this.#native = new NativeClass(config, this.parameterBuffer, this.gradientBuffer, { recompute });
    // The native engine computes the same layout on its own; a drift between the two
    // would silently read the wrong weights.
    const nativeLayout = this.#native.layout();
    if (nativeLayout.length !== this.layout.length ||
        nativeLayout.some((e, i) => e.name !== this.layout[i].name || e.offset !== this.layout[i].offset ||
                                    e.shape.join() !== this.layout[i].shape.join()))
      throw new Error('lgrpo-native: the native parameter layout differs from parameterShapes(); rebuild the addon');
    if (device !== 'cpu') return;
    const views = (buffer: Tensor) => {
      const data = buffer.data as Float32Array;
      return new Map(this.layout.map((p) => [p.name, data.subarray(p.offset, p.offset + p.numel)] as const));
    };
    this.#params = views(this.parameterBuffer);
    this.#grads = views(this.gradientBuffer);
  }

  /**
   * This policy's weights in a new policy on `device` (a copy: the two are independent).
   * A CUDA policy runs forward, backward, sequenceLogprobs and generate on its device;
   * its hidden states and head are CUDA tensors, and its weights are read or written
   * through `parameterBuffer` (or `to('cpu')`), not `parameters()`.
   */
  to(device: Device | 'cuda', options: { recompute?: boolean } = {}): Policy {
    this.#alive();
    const d = resolveDevice(device);
    return new Policy(this.config, d, boolOption(options.recompute, 'recompute', this.recompute), this.parameterBuffer);
  }

  /** A CPU policy built by `build`, moved to `device` when that is a CUDA device. */
  static #onDevice(device: Device, build: (cpu: Device) => Policy): Policy {
    const cpu = build('cpu');
    if (device === 'cpu') return cpu;
    try {
      return cpu.to(device);
    } finally {
      cpu.dispose();
    }
  }

  #hostViews(which: 'parameters' | 'gradients'): Map<string, Float32Array> {
    const views = which === 'parameters' ? this.#params : this.#grads;
    if (!views)
      throw new TypeError(`${which}: this policy's weights live on ${this.device}; use ${which === 'parameters' ? 'parameterBuffer' : 'gradientBuffer'} (a ${this.device} Tensor) or policy.to('cpu')`);
    return views;
  }

  /**
   * A freshly initialised model as transformers initialises one: linear and embedding
   * weights ~ N(0, initializer_range²) (the pad token's embedding row zero), norms 1,
   * biases 0. `config` is a parsed ModelConfig or a raw config.json object.
   */
  static random(config: ModelConfig | Record<string, unknown>, options?: RandomPolicyOptions): Policy {
    const opts = optionsArg(options);
    const cfg = resolveConfig(config);
    const device = resolveDevice(opts.device);
    if (device !== 'cpu') return Policy.#onDevice(device, () => Policy.random(config, { ...opts, device: 'cpu' }));
    const seed = numberOption(opts.seed, 'seed', 0, { integer: true, min: 0, max: Number.MAX_SAFE_INTEGER });
    const fromConfig = cfg.extra.initializer_range;
    const std = numberOption(opts.initializerRange, 'initializerRange',
      typeof fromConfig === 'number' && Number.isFinite(fromConfig) && fromConfig >= 0 ? fromConfig : 0.02, { min: 0 });
    const policy = new Policy(cfg, device, boolOption(opts.recompute, 'recompute', false));
    // Each tensor draws from its own stream (key = its index in the layout), so its
    // values depend on the seed and its own shape only.
    policy.layout.forEach(({ name }, key) => {
      const view = policy.#hostViews('parameters').get(name)!;
      if (name.endsWith('norm.weight')) view.fill(1);
      else if (name.endsWith('.bias')) view.fill(0);
      else addon().policyInitNormal(Tensor.from(view), { seed, key, std });
    });
    if (cfg.padTokenId !== undefined) {
      const D = cfg.hiddenSize;
      policy.#hostViews('parameters').get('model.embed_tokens.weight')!.fill(0, cfg.padTokenId * D, (cfg.padTokenId + 1) * D);
    }
    return policy;
  }

  /**
   * Loads config.json and the safetensors weights (model.safetensors, or shards with
   * model.safetensors.index.json) of a Hugging Face checkpoint directory; bf16 and f16
   * weights are widened to f32. Missing, unexpected or misshapen tensors are errors
   * naming them.
   */
  static fromPretrained(dir: string, options?: PolicyOptions): Policy {
    const opts = optionsArg(options);
    if (typeof dir !== 'string' || dir.length === 0) throw new TypeError('dir: expected a checkpoint directory path');
    const device = resolveDevice(opts.device);
    if (device !== 'cpu') return Policy.#onDevice(device, () => Policy.fromPretrained(dir, { ...opts, device: 'cpu' }));
    const config = loadConfig(dir);
    // Every header is checked against config.json before anything is allocated or read:
    // a 15 KB checkpoint whose config claimed 10^5 layers once allocated 3.2 GB (and an
    // unexpected 2 GB tensor was read in full) before its error.
    const headers = readSafetensorsDirHeaders(dir);
    const mismatch = (problem: string): never => {
      throw new Error(`${dir}: the weights do not match config.json (${config.modelType}, ${config.numHiddenLayers} layers): ${problem}`);
    };
    // The layer count first: the expected layout of an absurd count is itself large.
    let layers = 0;
    for (const name of headers.entries.keys()) {
      const m = /^model\.layers\.(\d+)\./.exec(name);
      if (m) layers = Math.max(layers, Number(m[1]) + 1);
    }
    if (config.numHiddenLayers > layers)
      mismatch(`config.json says num_hidden_layers = ${config.numHiddenLayers} but the weights hold ${layers} layer(s)`);
    const layout = parameterShapes(config);
    const expected = new Set(layout.map((p) => p.name));
    const missing = layout.map((p) => p.name).filter((n) => !headers.entries.has(n));
    let extra = [...headers.entries.keys()].filter((n) => !expected.has(n) && !IGNORED_TENSORS.test(n));
    // Tied checkpoints are sometimes saved with the (identical) head anyway.
    const tiedCopy = config.tieWordEmbeddings && extra.includes('lm_head.weight');
    if (tiedCopy) extra = extra.filter((n) => n !== 'lm_head.weight');
    if (missing.length || extra.length) {
      const parts: string[] = [];
      if (missing.length) parts.push(`missing ${missing.length} tensor(s): ${listNames(missing)}`);
      if (extra.length) parts.push(`unexpected ${extra.length} tensor(s): ${listNames(extra)}`);
      mismatch(parts.join('; '));
    }
    const wanted = tiedCopy ? [...layout, { name: 'lm_head.weight', shape: [config.vocabSize, config.hiddenSize] }] : layout;
    for (const p of wanted) {
      const { entry } = headers.entries.get(p.name)!;
      if (entry.shape.join() !== p.shape.join())
        throw new Error(`${dir}: tensor ${p.name} has shape [${entry.shape.join(', ')}] but config.json implies [${p.shape.join(', ')}]`);
      if (!SUPPORTED_FILE_DTYPES.has(entry.fileDtype))
        throw new Error(`${dir}: tensor ${p.name} has dtype ${entry.fileDtype}; only F32, BF16 and F16 are supported`);
    }

    const policy = new Policy(config, device, boolOption(opts.recompute, 'recompute', false));
    try {
      forEachTensor(headers, wanted.map((p) => p.name), (name, t) => {
        if (name === 'lm_head.weight' && tiedCopy) {
          const head = new Float32Array(config.vocabSize * config.hiddenSize);
          convertInto(head, t);
          if (!sameBits(head, policy.#hostViews('parameters').get('model.embed_tokens.weight')!))
            throw new Error(`${dir}: tensor lm_head.weight differs from model.embed_tokens.weight but config.json sets tie_word_embeddings`);
        } else {
          convertInto(policy.#hostViews('parameters').get(name)!, t);
        }
      });
    } catch (e) {
      policy.dispose();
      throw e;
    }
    return policy;
  }

  /** Writes config.json and the weights (f32, or bf16 if asked; Hugging Face names) into `dir`. */
  save(dir: string, options?: SaveOptions): void {
    this.#alive();
    const opts = optionsArg(options);
    if (typeof dir !== 'string' || dir.length === 0) throw new TypeError('dir: expected a directory path');
    const dtype = opts.dtype ?? 'f32';
    if (dtype !== 'f32' && dtype !== 'bf16') throw new TypeError(`dtype: expected 'f32' or 'bf16', got ${JSON.stringify(opts.dtype)}`);
    ensureDir(dir);
    const host = this.device === 'cpu' ? undefined : this.parameterBuffer.to('cpu');
    const flat = (host ?? this.parameterBuffer).data as Float32Array;
    const tensors = this.layout.map((p) => {
      const values = flat.subarray(p.offset, p.offset + p.numel);
      return [p.name, dtype === 'f32'
        ? { dtype: 'f32' as const, shape: p.shape, data: values }
        : { dtype: 'bf16' as const, shape: p.shape, data: fromFloat32Array(values, 'bf16') }] as const;
    });
    saveSafetensorsDir(dir, tensors, opts.maxShardBytes === undefined ? {} : { maxShardBytes: opts.maxShardBytes });
    saveConfig(join(dir, 'config.json'), { ...this.config, torchDtype: dtype === 'f32' ? 'float32' : 'bfloat16' });
    host?.dispose();
  }

  /** name → Float32Array view of the parameter (in layout order); writes go to the model. */
  parameters(): Map<string, Float32Array> {
    this.#alive();
    return this.#hostViews('parameters');
  }

  /**
   * name → Tensor view of each parameter and of its gradient, on the policy's device
   * (views of parameterBuffer and gradientBuffer, no copies): what an optimiser of a
   * CUDA policy takes, e.g. `new AdamW(p.parameters, p.gradients, opts)`.
   */
  tensors(): { parameters: Map<string, Tensor>; gradients: Map<string, Tensor> } {
    this.#alive();
    const views = (buffer: Tensor) => new Map(this.layout.map((p) => [p.name, buffer.view(p.offset, p.shape)] as const));
    return { parameters: views(this.parameterBuffer), gradients: views(this.gradientBuffer) };
  }

  /** name → Float32Array view of the accumulated gradient. */
  gradients(): Map<string, Float32Array> {
    this.#alive();
    return this.#hostViews('gradients');
  }

  get numParameters(): number {
    return this.parameterBuffer.numel;
  }

  /** The LM-head weight [V, D] as a view (the embedding when tied): pass it to linearTokenLogprobs. */
  get lmHeadWeight(): Tensor {
    this.#alive();
    return this.parameterBuffer.view(this.#headOffset(), [this.config.vocabSize, this.config.hiddenSize]);
  }

  /** The LM-head gradient [V, D] as a view (the embedding's when tied). */
  get lmHeadGrad(): Tensor {
    this.#alive();
    return this.gradientBuffer.view(this.#headOffset(), [this.config.vocabSize, this.config.hiddenSize]);
  }

  get recompute(): boolean {
    this.#alive();
    return this.#native.stats().recompute;
  }

  set recompute(on: boolean) {
    this.#alive();
    this.#native.setRecompute(boolOption(on, 'recompute', false));
    this.#lastForward = undefined;
  }

  /** Sets every gradient to 0. */
  zeroGrad(): void {
    this.#alive();
    addon().fillZero(this.gradientBuffer);
  }

  /**
   * Runs the model over a right-padded batch and returns the final normed hidden states
   * [B·T, D]; keeps the activations backward() needs.
   */
  forward(batch: Batch): ForwardResult {
    this.#alive();
    const { ids, lengths, batch: B, seq: T } = this.#batch(batch);
    this.#lastForward = undefined;
    const out = this.#native.forward(ids, lengths);
    this.#lastForward = { rows: B * T };
    return {
      hidden: ArrayBuffer.isView(out) ? Tensor.from(out, [B * T, this.config.hiddenSize]) : Tensor.fromNative(out),
      batch: B,
      seq: T,
      lengths: lengths.data as Int32Array,
    };
  }

  /**
   * Accumulates (+=) into gradients() the gradient of L through the last forward(), given
   * gradHidden = ∂L/∂hidden [B·T, D] (padded rows ignored) and, optionally, the LM-head
   * weight gradient, which is added to the head's (or tied embedding's) gradient.
   */
  backward(gradHidden: TensorLike, options?: BackwardOptions): void {
    this.#alive();
    const opts = optionsArg(options);
    if (!this.#lastForward) throw new Error('backward: no saved activations; call forward() first');
    const g = tensorArg(gradHidden, 'gradHidden', ['f32'], [this.#lastForward.rows, this.config.hiddenSize]);
    const nativeOpts: { gradLmHead?: Tensor } = {};
    if (opts.gradLmHead !== undefined)
      nativeOpts.gradLmHead = tensorArg(opts.gradLmHead, 'gradLmHead', ['f32'], [this.config.vocabSize, this.config.hiddenSize]);
    for (const [name, t] of [['gradHidden', g], ['gradLmHead', nativeOpts.gradLmHead]] as const)
      if (t && t.device !== this.device) throw new TypeError(`${name}: is on ${t.device} but the policy is on ${this.device}; move it there`);
    this.#native.backward(g, nativeOpts);
  }

  /**
   * Samples continuations of each prompt with a KV cache: batched prefill of the ragged
   * prompts, then one token per step for every unfinished row.
   */
  generate(prompts: readonly (readonly number[])[], options: GenerateOptions): GenerateResult {
    this.#alive();
    if (options === undefined || options === null || typeof options !== 'object')
      throw new TypeError('options: expected {maxNewTokens, ...}');
    const rows = this.#rows(prompts, 'prompts', 1);
    const maxNewTokens = numberOption(options.maxNewTokens, 'maxNewTokens', NaN, { integer: true, min: 0 });
    if (Number.isNaN(maxNewTokens)) throw new TypeError('maxNewTokens: required (a non-negative integer)');
    // 0 is greedy decoding; any other value divides the logits, so the kernels' rule holds.
    const temperature = options.temperature === 0 ? 0 : temperatureOption(options.temperature);
    const topP = numberOption(options.topP, 'topP', 1, { above: 0, max: 1 });
    const topK = intOption(options.topK, 'topK', 0, 0);
    const seed = options.seed === undefined
      ? randomBytes(6).readUIntLE(0, 6)
      : numberOption(options.seed, 'seed', 0, { integer: true, min: 0, max: Number.MAX_SAFE_INTEGER });
    const precision = options.precision ?? 'f32';
    if (precision !== 'f32' && precision !== 'bf16')
      throw new RangeError(`precision: expected 'f32' or 'bf16', got ${JSON.stringify(precision)}`);
    const stopList = options.stopIds === undefined ? eosTokenIds(this.config) : options.stopIds;
    if (!Array.isArray(stopList)) throw new TypeError('stopIds: expected an array of token ids');
    const stopIds = Int32Array.from(stopList.map((id, i) => this.#tokenId(id, `stopIds[${i}]`)));
    if (rows.length === 0) return { tokens: [], logprobs: [], stopped: [] };
    const longest = Math.max(...rows.map((r) => r.length));
    if (longest + maxNewTokens > this.config.maxPositionEmbeddings)
      throw new RangeError(`maxNewTokens: the longest prompt (${longest}) plus maxNewTokens (${maxNewTokens}) exceeds max_position_embeddings=${this.config.maxPositionEmbeddings}`);
    const { ids, lengths } = this.#pad(rows, longest);
    const out = this.#native.generate(ids, lengths, { maxNewTokens, temperature, topP, topK, stopIds: Tensor.from(stopIds), seed, precision });
    return {
      tokens: out.tokens.map((t) => Array.from(t)),
      logprobs: out.logprobs,
      stopped: Array.from(out.stopped, (s) => s === 1),
    };
  }

  /**
   * log p(completion[b][j] | prompt[b], completion[b][< j]) for every completion token,
   * one Float32Array per row (empty for an empty completion). Prompts need a token.
   */
  sequenceLogprobs(
    prompts: readonly (readonly number[])[],
    completions: readonly (readonly number[])[],
    options?: SequenceLogprobsOptions,
  ): Float32Array[] {
    this.#alive();
    const opts = optionsArg(options);
    const p = this.#rows(prompts, 'prompts', 1);
    const c = this.#rows(completions, 'completions', 0);
    if (p.length !== c.length)
      throw new RangeError(`completions: ${c.length} rows but prompts has ${p.length}`);
    const temperature = temperatureOption(opts.temperature);
    const full = p.map((row, i) => [...row, ...c[i]]);
    const longest = full.reduce((m, r) => Math.max(m, r.length), 0);
    if (longest > this.config.maxPositionEmbeddings)
      throw new RangeError(`completions: a prompt plus completion of ${longest} tokens exceeds max_position_embeddings=${this.config.maxPositionEmbeddings}`);
    if (full.length === 0) return [];
    const { ids, lengths } = this.#pad(full, longest);
    const flat = this.#native.sequenceLogprobs(ids, lengths, Tensor.from(Int32Array.from(p, (r) => r.length)), { temperature });
    const out: Float32Array[] = [];
    let at = 0;
    for (const row of c) {
      out.push(flat.slice(at, at + row.length));
      at += row.length;
    }
    return out;
  }

  /** Arena sizes and allocation counts (for memory checks). */
  stats(): PolicyStats {
    this.#alive();
    return this.#native.stats();
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /** Frees the arenas, parameters and gradients now; views from parameters() become empty. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#native.dispose();
    this.parameterBuffer.dispose();
    this.gradientBuffer.dispose();
  }

  #alive(): void {
    if (this.#disposed) throw new Error('policy: it was disposed');
  }

  #headName(): string {
    return this.config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
  }

  #headOffset(): number {
    return this.layout.find((p) => p.name === this.#headName())!.offset;
  }

  #tokenId(id: unknown, name: string): number {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= this.config.vocabSize)
      throw new RangeError(`${name}: expected a token id in [0, ${this.config.vocabSize}), got ${String(id)}`);
    return id;
  }

  /** Validates an array of token rows (each at least minLength long). */
  #rows(rows: unknown, name: string, minLength: number): number[][] {
    if (!Array.isArray(rows)) throw new TypeError(`${name}: expected an array of token id arrays`);
    const V = this.config.vocabSize;
    return rows.map((row: unknown, b) => {
      if (!Array.isArray(row) && !ArrayBuffer.isView(row)) throw new TypeError(`${name}[${b}]: expected an array of token ids`);
      const r = row as ArrayLike<number>;
      if (r.length < minLength) throw new RangeError(`${name}[${b}]: expected at least ${minLength} token(s), got ${r.length}`);
      for (let t = 0; t < r.length; t++) {
        const id = r[t];
        if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= V)
          throw new RangeError(`${name}[${b}][${t}]: expected a token id in [0, ${V}), got ${String(id)}`);
      }
      return Array.from(r);
    });
  }

  #pad(rows: number[][], seq: number): { ids: Tensor; lengths: Tensor } {
    const ids = new Int32Array(rows.length * seq);
    rows.forEach((r, b) => ids.set(r, b * seq));
    return { ids: Tensor.from(ids, [rows.length, seq]), lengths: Tensor.from(Int32Array.from(rows, (r) => r.length)) };
  }

  /** Resolves a Batch into ids [B, T] and lengths [B], validated. */
  #batch(batch: Batch): { ids: Tensor; lengths: Tensor; batch: number; seq: number } {
    if (typeof batch !== 'object' || batch === null) throw new TypeError('batch: expected {ids, lengths?}');
    const V = this.config.vocabSize;
    let ids: Tensor, B: number, T: number, lengths: Int32Array;
    const given = batch.lengths === undefined ? undefined
      : isTensor(batch.lengths) ? tensorArg(batch.lengths, 'lengths', ['i32'], [null]).data as Int32Array
      : (() => {
          if (!Array.isArray(batch.lengths) && !ArrayBuffer.isView(batch.lengths)) throw new TypeError('lengths: expected an array of integers');
          return Array.from(batch.lengths as ArrayLike<number>);
        })();
    if (Array.isArray(batch.ids)) {
      const rows = batch.ids as readonly (readonly number[])[];
      B = rows.length;
      T = 0;
      for (const [b, r] of rows.entries()) {
        if (!Array.isArray(r) && !ArrayBuffer.isView(r)) throw new TypeError(`ids[${b}]: expected an array of token ids`);
        T = Math.max(T, r.length);
      }
      lengths = given === undefined ? Int32Array.from(rows, (r) => r.length) : Int32Array.from(given);
      if (lengths.length !== B) throw new RangeError(`lengths: ${lengths.length} entries but ids has ${B} rows`);
      const flat = new Int32Array(B * T);
      rows.forEach((r, b) => {
        if (given !== undefined && given[b] > r.length)
          throw new RangeError(`lengths: length ${given[b]} of row ${b} exceeds its ${r.length} ids`);
        // Checked before the Int32Array conversion, which would truncate 2.5 to 2.
        for (let t = 0; t < lengths[b]; t++)
          if (!Number.isInteger(r[t]) || r[t] < 0 || r[t] >= V)
            throw new RangeError(`ids: token id ${String(r[t])} at row ${b}, position ${t} is outside [0, ${V})`);
        for (let t = 0; t < r.length; t++) flat[b * T + t] = t < lengths[b] ? r[t] : 0;
      });
      ids = Tensor.from(flat, [B, T]);
    } else if (isTensor(batch.ids)) {
      ids = tensorArg(batch.ids, 'ids', ['i32'], [null, null]);
      if (ids.isCuda) throw new TypeError('ids: token ids are host data; pass a CPU tensor');
      [B, T] = ids.shape;
      lengths = given === undefined ? new Int32Array(B).fill(T) : Int32Array.from(given);
    } else if (batch.ids instanceof Int32Array) {
      if (given === undefined) throw new TypeError('lengths: required when ids is a flat Int32Array (it gives the batch size)');
      B = given.length;
      if (B === 0 ? batch.ids.length !== 0 : batch.ids.length % B !== 0)
        throw new RangeError(`ids: length ${batch.ids.length} is not a multiple of the ${B} rows that lengths gives`);
      T = B === 0 ? 0 : batch.ids.length / B;
      ids = Tensor.from(batch.ids, [B, T]);
      lengths = Int32Array.from(given);
    } else {
      throw new TypeError('ids: expected an array of token rows, an Int32Array or an i32 Tensor [B, T]');
    }
    if (lengths.length !== B) throw new RangeError(`lengths: ${lengths.length} entries but ids has ${B} rows`);
    if (given !== undefined)
      for (let b = 0; b < B; b++)
        if (!Number.isInteger(given[b]) || given[b] < 0 || given[b] > T)
          throw new RangeError(`lengths: length ${given[b]} of row ${b} is outside [0, ${T}]`);
    if (T > this.config.maxPositionEmbeddings)
      throw new RangeError(`ids: sequence length ${T} exceeds max_position_embeddings=${this.config.maxPositionEmbeddings}`);
    const data = ids.data as Int32Array;
    for (let b = 0; b < B; b++)
      for (let t = 0; t < lengths[b]; t++) {
        const id = data[b * T + t];
        if (!Number.isInteger(id) || id < 0 || id >= V)
          throw new RangeError(`ids: token id ${id} at row ${b}, position ${t} is outside [0, ${V})`);
      }
    return { ids, lengths: Tensor.from(lengths), batch: B, seq: T };
  }
}
