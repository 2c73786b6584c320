// The model configuration: a Hugging Face config.json of the Qwen2 / Llama family, parsed
// into typed fields the engine and trainer can trust (every size checked, defaults
// resolved the way transformers resolves them), and written back in a form transformers
// loads. parameterShapes() is the one place that names the weights and fixes their order.
import { readFileSync, renameSync, unlinkSync, writeFileSync, statSync } from 'node:fs';
import { readRegularFileText } from '../safe_read.js';
import { join } from 'node:path';
import type { FloatDType } from '../dtype.js';

export type ModelType = 'qwen2' | 'llama';
export type TorchDType = 'float32' | 'bfloat16' | 'float16';

export interface ModelConfig {
  modelType: ModelType;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  vocabSize: number;
  tieWordEmbeddings: boolean;
  maxPositionEmbeddings: number;
  /** q_proj, k_proj and v_proj carry a bias (always in Qwen2; `attention_bias` in Llama). */
  qkvBias: boolean;
  /** o_proj carries a bias: Llama's `attention_bias` covers o_proj too, Qwen2 never has one. */
  oProjBias: boolean;
  /** The dtype the checkpoint was saved in (`torch_dtype`), when the file says. */
  torchDtype?: TorchDType;
  bosTokenId?: number | number[];
  eosTokenId?: number | number[];
  padTokenId?: number;
  /**
   * Keys of the source file this parser does not interpret (transformers_version,
   * use_cache, sliding_window, ...), kept so configToJson() writes them back unchanged.
   */
  extra: Record<string, unknown>;
}

export interface ParameterShape {
  name: string;
  shape: number[];
}

const TORCH_DTYPES: Record<TorchDType, FloatDType> = { float32: 'f32', bfloat16: 'bf16', float16: 'f16' };

// Keys read (or deliberately checked) by parseConfig; everything else lands in `extra`.
const KNOWN_KEYS = new Set([
  'model_type', 'architectures', 'hidden_size', 'intermediate_size', 'num_hidden_layers',
  'num_attention_heads', 'num_key_value_heads', 'head_dim', 'rms_norm_eps', 'rope_theta',
  'vocab_size', 'tie_word_embeddings', 'max_position_embeddings', 'attention_bias', 'mlp_bias',
  'hidden_act', 'rope_scaling', 'rope_parameters', 'layer_types', 'use_sliding_window', 'torch_dtype', 'dtype',
  'bos_token_id', 'eos_token_id', 'pad_token_id',
]);

// transformers' defaults where a config may leave a key out (Qwen2Config / LlamaConfig).
const DEFAULT_MAX_POSITIONS: Record<ModelType, number> = { qwen2: 32768, llama: 2048 };
const ARCHITECTURES: Record<ModelType, string> = { qwen2: 'Qwen2ForCausalLM', llama: 'LlamaForCausalLM' };

const MAX_LAYERS = 4096;

class ConfigReader {
  constructor(readonly json: Record<string, unknown>, readonly source: string) {}

  fail(key: string, problem: string): never {
    throw new Error(`${this.source}: ${key}: ${problem}`);
  }

  has(key: string): boolean {
    return this.json[key] !== undefined && this.json[key] !== null;
  }

  // The native engine indexes with 32-bit sizes, and the layout is built layer by layer,
  // so an absurd count (10^9 layers) must fail here rather than hang or overflow later.
  positiveInt(key: string, fallback?: number, max = 2 ** 31 - 1): number {
    if (!this.has(key)) {
      if (fallback !== undefined) return fallback;
      this.fail(key, 'is required');
    }
    const v = this.json[key];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0)
      this.fail(key, `expected a positive integer, got ${JSON.stringify(v)}`);
    if (v > max) this.fail(key, `${v} exceeds the supported maximum ${max}`);
    return v;
  }

  positiveNumber(key: string, fallback: number): number {
    if (!this.has(key)) return fallback;
    const v = this.json[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0)
      this.fail(key, `expected a positive finite number, got ${JSON.stringify(v)}`);
    return v;
  }

  bool(key: string, fallback: boolean): boolean {
    if (!this.has(key)) return fallback;
    const v = this.json[key];
    if (typeof v !== 'boolean') this.fail(key, `expected true or false, got ${JSON.stringify(v)}`);
    return v;
  }

  tokenId(key: string, vocabSize: number, allowArray: boolean): number | number[] | undefined {
    if (!this.has(key)) return undefined;
    const v = this.json[key];
    const check = (id: unknown): number => {
      if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0 || id >= vocabSize)
        this.fail(key, `expected token ids in [0, vocab_size=${vocabSize}), got ${JSON.stringify(v)}`);
      return id;
    };
    if (Array.isArray(v)) {
      if (!allowArray) this.fail(key, `expected a single token id, got ${JSON.stringify(v)}`);
      if (v.length === 0) this.fail(key, 'expected at least one token id, got []');
      return v.map(check);
    }
    return check(v);
  }
}

// transformers ≥ 5 writes the RoPE base inside `rope_parameters` ({rope_type, rope_theta})
// and no top-level rope_theta; older files have only the top-level key. Reading one and
// defaulting the other would rotate by the wrong base without a word, so both are read
// and must agree.
function ropeTheta(r: ConfigReader): number {
  const top = r.has('rope_theta') ? r.positiveNumber('rope_theta', 10000) : undefined;
  if (!r.has('rope_parameters')) return top ?? 10000;
  const params = r.json.rope_parameters as Record<string, unknown>;
  const nested = params.rope_theta;
  if (nested === undefined || nested === null) return top ?? 10000;
  if (typeof nested !== 'number' || !Number.isFinite(nested) || nested <= 0)
    r.fail('rope_parameters', `rope_theta: expected a positive finite number, got ${JSON.stringify(nested)}`);
  if (top !== undefined && top !== nested)
    r.fail('rope_parameters', `rope_theta ${nested} disagrees with the top-level rope_theta ${top}`);
  return nested;
}

/**
 * Parses a config.json object. `source` names the file in error messages, which read
 * "<source>: <key>: <problem>".
 */
export function parseConfig(json: unknown, source = 'config.json'): ModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    throw new Error(`${source}: expected a JSON object at the top level`);
  const r: ConfigReader = new ConfigReader(json as Record<string, unknown>, source);

  const modelType = r.json.model_type;
  if (modelType !== 'qwen2' && modelType !== 'llama')
    r.fail('model_type', `expected "qwen2" or "llama", got ${JSON.stringify(modelType)}`);

  // The engine implements exactly SwiGLU with unscaled RoPE and full causal attention; a
  // config asking for anything else must fail here rather than load and compute wrongly.
  if (r.has('hidden_act') && r.json.hidden_act !== 'silu')
    r.fail('hidden_act', `only "silu" (SwiGLU) is supported, got ${JSON.stringify(r.json.hidden_act)}`);
  for (const key of ['rope_scaling', 'rope_parameters']) {
    if (!r.has(key)) continue;
    const scaling = r.json[key] as Record<string, unknown>;
    const kind = typeof scaling === 'object' ? scaling.rope_type ?? scaling.type : scaling;
    if (kind !== 'default') r.fail(key, `only unscaled RoPE is supported, got ${JSON.stringify(r.json[key])}`);
  }
  if (r.bool('use_sliding_window', false))
    r.fail('use_sliding_window', 'sliding-window attention is not supported');
  // transformers ≥ 5 lists each layer's attention; only full causal attention is implemented.
  if (r.has('layer_types')) {
    const types = r.json.layer_types;
    if (!Array.isArray(types) || types.some((t) => t !== 'full_attention'))
      r.fail('layer_types', `only "full_attention" layers are supported, got ${JSON.stringify(types)}`);
  }
  if (r.bool('mlp_bias', false)) r.fail('mlp_bias', 'MLP biases are not supported');

  const hiddenSize = r.positiveInt('hidden_size');
  const intermediateSize = r.positiveInt('intermediate_size');
  const numHiddenLayers = r.positiveInt('num_hidden_layers', undefined, MAX_LAYERS);
  const numAttentionHeads = r.positiveInt('num_attention_heads');
  const numKeyValueHeads = r.positiveInt('num_key_value_heads', numAttentionHeads);
  const vocabSize = r.positiveInt('vocab_size');
  if (numAttentionHeads % numKeyValueHeads !== 0)
    r.fail('num_key_value_heads', `${numKeyValueHeads} does not divide num_attention_heads=${numAttentionHeads}`);
  // An explicit head_dim decouples the attention width from hidden_size (transformers
  // then sizes q_proj as heads·head_dim); only the derived default needs divisibility.
  let headDim: number;
  if (r.has('head_dim')) {
    headDim = r.positiveInt('head_dim');
  } else {
    if (hiddenSize % numAttentionHeads !== 0)
      r.fail('num_attention_heads', `${numAttentionHeads} does not divide hidden_size=${hiddenSize}`);
    headDim = hiddenSize / numAttentionHeads;
  }
  if (headDim % 2 !== 0)
    r.fail(r.has('head_dim') ? 'head_dim' : 'num_attention_heads', `head_dim=${headDim} must be even for RoPE`);

  let torchDtype: TorchDType | undefined;
  // transformers ≥ 4.56 writes `dtype`; older versions `torch_dtype`.
  for (const key of ['torch_dtype', 'dtype']) {
    if (!r.has(key)) continue;
    const v = r.json[key];
    if (typeof v !== 'string' || !Object.hasOwn(TORCH_DTYPES, v))
      r.fail(key, `expected "float32", "bfloat16" or "float16", got ${JSON.stringify(v)}`);
    torchDtype = v as TorchDType;
    break;
  }

  const isQwen = modelType === 'qwen2';
  const attentionBias = isQwen ? false : r.bool('attention_bias', false);
  const padTokenId = r.tokenId('pad_token_id', vocabSize, false) as number | undefined;

  // A Qwen2 file's own attention_bias (if any) does not affect Qwen2; keep it for the round trip.
  const extra: Record<string, unknown> = Object.fromEntries(
    Object.entries(r.json).filter(([key]) => !KNOWN_KEYS.has(key) || (isQwen && key === 'attention_bias')));

  const config: ModelConfig = {
    modelType,
    hiddenSize,
    intermediateSize,
    numHiddenLayers,
    numAttentionHeads,
    numKeyValueHeads,
    headDim,
    rmsNormEps: r.positiveNumber('rms_norm_eps', 1e-6),
    ropeTheta: ropeTheta(r),
    vocabSize,
    tieWordEmbeddings: r.bool('tie_word_embeddings', false),
    maxPositionEmbeddings: r.positiveInt('max_position_embeddings', DEFAULT_MAX_POSITIONS[modelType]),
    qkvBias: isQwen || attentionBias,
    oProjBias: attentionBias,
    extra,
  };
  if (torchDtype !== undefined) config.torchDtype = torchDtype;
  const bos = r.tokenId('bos_token_id', vocabSize, true);
  const eos = r.tokenId('eos_token_id', vocabSize, true);
  if (bos !== undefined) config.bosTokenId = bos;
  if (eos !== undefined) config.eosTokenId = eos;
  if (padTokenId !== undefined) config.padTokenId = padTokenId;
  return config;
}

/** Reads and parses config.json; `path` may be the file or the model directory. */
export function loadConfig(path: string): ModelConfig {
  let file = path;
  let root: string | undefined;
  try {
    if (statSync(path).isDirectory()) {
      file = join(path, 'config.json');
      root = path;
    }
  } catch {
    // fall through: the read below reports the missing path
  }
  let text: string;
  try {
    text = readRegularFileText(file, root, 16 * 1024 * 1024);
  } catch (e) {
    throw new Error(`${file}: cannot read the config: ${(e as Error).message}`, { cause: e });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file}: not valid JSON: ${(e as Error).message}`);
  }
  return parseConfig(json, file);
}

/** A config.json object transformers loads back into the same model. */
export function configToJson(config: ModelConfig): Record<string, unknown> {
  const json: Record<string, unknown> = {
    architectures: [ARCHITECTURES[config.modelType]],
    model_type: config.modelType,
    hidden_act: 'silu',
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numHiddenLayers,
    num_attention_heads: config.numAttentionHeads,
    num_key_value_heads: config.numKeyValueHeads,
    head_dim: config.headDim,
    rms_norm_eps: config.rmsNormEps,
    rope_theta: config.ropeTheta,
    rope_scaling: null,
    vocab_size: config.vocabSize,
    tie_word_embeddings: config.tieWordEmbeddings,
    max_position_embeddings: config.maxPositionEmbeddings,
  };
  if (config.modelType === 'llama') {
    // Llama has one switch for q/k/v/o biases; a split that Llama cannot express would
    // silently change the model on reload.
    if (config.qkvBias !== config.oProjBias)
      throw new Error(`configToJson: a llama config needs qkvBias === oProjBias (attention_bias covers q, k, v and o)`);
    json.attention_bias = config.qkvBias;
    json.mlp_bias = false;
  } else if (!config.qkvBias || config.oProjBias) {
    throw new Error('configToJson: a qwen2 config always has q/k/v biases and no o_proj bias');
  } else {
    json.use_sliding_window = false;
  }
  if (config.torchDtype !== undefined) json.torch_dtype = config.torchDtype;
  if (config.bosTokenId !== undefined) json.bos_token_id = config.bosTokenId;
  if (config.eosTokenId !== undefined) json.eos_token_id = config.eosTokenId;
  if (config.padTokenId !== undefined) json.pad_token_id = config.padTokenId;
  const kept = Object.entries(config.extra).filter(([key]) => !Object.hasOwn(json, key));
  return Object.fromEntries([...Object.entries(json), ...kept]);
}

/** Writes config.json atomically (temporary file, then rename). */
export function saveConfig(path: string, config: ModelConfig): void {
  const text = JSON.stringify(configToJson(config), null, 2) + '\n';
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    writeFileSync(tmp, text);
    renameSync(tmp, path);
  } catch (e) {
    try { unlinkSync(tmp); } catch { /* already gone */ }
    throw e;
  }
}

/** The checkpoint dtype as a storage dtype (f32 when the config does not say). */
export function checkpointDtype(config: ModelConfig): FloatDType {
  return TORCH_DTYPES[config.torchDtype ?? 'float32'];
}

/** End-of-sequence ids as a list (config files hold one id or several). */
export function eosTokenIds(config: ModelConfig): number[] {
  const eos = config.eosTokenId;
  return eos === undefined ? [] : Array.isArray(eos) ? [...eos] : [eos];
}

/**
 * Every weight with its Hugging Face name and shape ([out, in] for linear layers), in
 * forward order: embedding, then per layer input_layernorm, q/k/v/o projections (each
 * bias right after its weight), post_attention_layernorm, gate/up/down; then the final
 * norm and lm_head (absent when tied to the embedding). Trainer and engine lay
 * parameters out in exactly this order.
 */
export function parameterShapes(config: ModelConfig): ParameterShape[] {
  const H = config.hiddenSize, I = config.intermediateSize, V = config.vocabSize;
  const qWidth = config.numAttentionHeads * config.headDim;
  const kvWidth = config.numKeyValueHeads * config.headDim;
  const out: ParameterShape[] = [{ name: 'model.embed_tokens.weight', shape: [V, H] }];
  for (let i = 0; i < config.numHiddenLayers; i++) {
    const p = `model.layers.${i}`;
    out.push({ name: `${p}.input_layernorm.weight`, shape: [H] });
    for (const [proj, width] of [['q', qWidth], ['k', kvWidth], ['v', kvWidth]] as const) {
      out.push({ name: `${p}.self_attn.${proj}_proj.weight`, shape: [width, H] });
      if (config.qkvBias) out.push({ name: `${p}.self_attn.${proj}_proj.bias`, shape: [width] });
    }
    out.push({ name: `${p}.self_attn.o_proj.weight`, shape: [H, qWidth] });
    if (config.oProjBias) out.push({ name: `${p}.self_attn.o_proj.bias`, shape: [H] });
    out.push({ name: `${p}.post_attention_layernorm.weight`, shape: [H] });
    out.push({ name: `${p}.mlp.gate_proj.weight`, shape: [I, H] });
    out.push({ name: `${p}.mlp.up_proj.weight`, shape: [I, H] });
    out.push({ name: `${p}.mlp.down_proj.weight`, shape: [H, I] });
  }
  out.push({ name: 'model.norm.weight', shape: [H] });
  if (!config.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [V, H] });
  return out;
}

/** Total number of parameters (elements) over parameterShapes(config). */
export function parameterCount(config: ModelConfig): number {
  let n = 0;
  for (const { shape } of parameterShapes(config)) n += shape.reduce((a, b) => a * b, 1);
  return n;
}
