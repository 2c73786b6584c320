// The policy and tokenizer a run trains, and what every command does with them: load
// them (the built-in tiny model, a Hugging Face directory, a checkpoint or a run
// directory), turn examples into prompt ids, sample or decode greedily, turn tokens back
// into text, and evaluate greedy accuracy on held-out examples.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Device } from '../tensor.js';
import { Policy } from '../engine/policy.js';
import { eosTokenIds } from '../engine/config.js';
import { findCheckpoint } from './checkpoint.js';
import { isCorrect } from './rewards/math.js';
import { scoreAll, type RewardWarning, type WeightedReward } from './rewards/loader.js';
import type { Example, Task } from './tasks/types.js';
import { loadTokenizer, type TextTokenizer } from './tokenizer.js';

/**
 * The built-in tiny model: a 3-layer Llama-style decoder (d = 96, ~0.34 M parameters) over
 * the 100-symbol character tokenizer in assets/tiny. Sized so that the default run (a
 * supervised warm-up, then λ-GRPO on `arith`) fits in a few minutes on two CPU cores.
 */
export function tinyModelConfig(vocabSize: number): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: 96,
    intermediate_size: 256,
    num_hidden_layers: 3,
    num_attention_heads: 4,
    num_key_value_heads: 4,
    vocab_size: vocabSize,
    tie_word_embeddings: true,
    // Prompts are ≤ 25 tokens and step-by-step answers ≤ 36: room to spare.
    max_position_embeddings: 128,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    initializer_range: 0.02,
    bos_token_id: 1,
    eos_token_id: 2,
    pad_token_id: 0,
  };
}

export interface LoadedModel {
  policy: Policy;
  tokenizer: TextTokenizer;
  /** The directory loaded from (null for a freshly initialised tiny model). */
  dir: string | null;
}

/** Checks that every id the tokenizer can produce has an embedding row. */
export function checkVocab(policy: Policy, tokenizer: TextTokenizer, where: string): void {
  if (tokenizer.vocabSize > policy.config.vocabSize)
    throw new Error(`${where}: the tokenizer has ${tokenizer.vocabSize} ids but the model's vocab_size is ${policy.config.vocabSize}`);
}

/** A fresh tiny model (seeded) with the built-in tokenizer. */
export function tinyModel(seed: number, device: Device = 'cpu'): LoadedModel {
  const tokenizer = loadTokenizer('tiny');
  const policy = Policy.random(tinyModelConfig(tokenizer.vocabSize), { seed, device });
  return { policy, tokenizer, dir: null };
}

/**
 * A model directory as the commands accept it: a Hugging Face model directory or a
 * checkpoint (config.json + safetensors + tokenizer files), or a run directory (its latest
 * checkpoint).
 */
export function resolveModelDir(path: string): string {
  if (!existsSync(path)) throw new Error(`model: ${path} does not exist`);
  // A run directory has a config.json too (the run's): weights tell the two apart.
  if (['model.safetensors', 'model.safetensors.index.json'].some((f) => existsSync(join(path, f)))) return path;
  try {
    return findCheckpoint(path).dir;
  } catch (e) {
    throw new Error(`model: ${path} is neither a model directory (no model.safetensors) nor a run directory with a checkpoint (${(e as Error).message.replace(/^resume: /, '')})`);
  }
}

/** Loads policy and tokenizer from a model, checkpoint or run directory. */
export function loadModelDir(path: string, options: { device?: string; chatTemplate?: 'auto' | 'none' } = {}): LoadedModel {
  const dir = resolveModelDir(path);
  const tokenizer = loadTokenizer(dir, { useChatTemplate: options.chatTemplate !== 'none' });
  const policy = Policy.fromPretrained(dir, { device: (options.device ?? 'cpu') as Device });
  try {
    checkVocab(policy, tokenizer, dir);
  } catch (e) {
    policy.dispose();
    throw e;
  }
  return { policy, tokenizer, dir };
}

/** The ids a sampled row stops at: the tokenizer's end-of-sequence, the model config's and generation_config.json's. */
export function stopIds(policy: Policy, tokenizer: TextTokenizer): number[] {
  return [...new Set([tokenizer.eosId, ...eosTokenIds(policy.config), ...(tokenizer.generationEosIds ?? [])])].filter((id) => id < policy.config.vocabSize).sort((a, b) => a - b);
}

/** How a model directory's generation_config.json asks to be sampled. */
export interface GenerationSampling {
  /** do_sample: false (or absent) means greedy decoding whatever the other fields say. */
  doSample: boolean;
  temperature: number;
  topP: number;
  /** 0: off. */
  topK: number;
  /** Fields the sampler does not implement, with their values (e.g. repetition_penalty: 1.1). */
  unsupported: Record<string, unknown>;
}

// transformers' GenerationConfig defaults, for the fields a generation_config.json leaves out.
const HF_SAMPLING_DEFAULTS = { temperature: 1, top_p: 1, top_k: 50 };
// Fields that change sampling in transformers and that this sampler does not implement (at their no-op value).
const HF_UNSUPPORTED_SAMPLING: Record<string, unknown> = { repetition_penalty: 1, min_p: null, typical_p: 1, no_repeat_ngram_size: 0, num_beams: 1 };

/**
 * The sampling settings transformers' generate() takes from generation_config.json when a caller
 * gives none (do_sample, temperature, top_p, top_k, its defaults for missing ones); null when the
 * tokenizer came without that file (the built-in tiny model). A malformed value is an error naming it.
 */
export function generationSampling(tokenizer: Pick<TextTokenizer, 'files'>): GenerationSampling | null {
  const text = tokenizer.files['generation_config.json'];
  if (text === undefined) return null;
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`generation_config.json: not JSON (${(e as Error).message})`);
  }
  const field = (name: keyof typeof HF_SAMPLING_DEFAULTS, ok: (v: number) => boolean, expected: string): number => {
    const v = raw[name] ?? HF_SAMPLING_DEFAULTS[name];
    if (typeof v !== 'number' || !ok(v)) throw new Error(`generation_config.json: ${name} must be ${expected}, got ${JSON.stringify(v)}`);
    return v;
  };
  const unsupported: Record<string, unknown> = {};
  for (const [name, neutral] of Object.entries(HF_UNSUPPORTED_SAMPLING))
    if (raw[name] !== undefined && raw[name] !== neutral) unsupported[name] = raw[name];
  return {
    doSample: raw.do_sample === true,
    temperature: field('temperature', (v) => Number.isFinite(v) && v >= 0, 'a number >= 0'),
    topP: field('top_p', (v) => v > 0 && v <= 1, 'a number in (0, 1]'),
    topK: field('top_k', (v) => Number.isSafeInteger(v) && v >= 0, 'an integer >= 0'),
    unsupported,
  };
}

/**
 * The text of generated tokens: a final stop id is dropped, as is any id the tokenizer
 * does not know (a model's embedding may have more rows than the tokenizer has ids:
 * Qwen's does) and special tokens.
 */
export function decodeCompletion(tokenizer: TextTokenizer, tokens: readonly number[], stops: readonly number[]): string {
  let end = tokens.length;
  if (end > 0 && stops.includes(tokens[end - 1])) end--;
  const known: number[] = [];
  for (let i = 0; i < end; i++) {
    const id = tokens[i];
    if (id < tokenizer.vocabSize && tokenizer.idToToken(id) !== undefined) known.push(id);
  }
  return tokenizer.decode(known, { skipSpecialTokens: true });
}

export interface Completion {
  tokens: number[];
  text: string;
  /** Ended on a stop id (false: cut at maxNewTokens). */
  stopped: boolean;
}

export interface GenerateSettings {
  maxNewTokens: number;
  /** 0: greedy. */
  temperature: number;
  topP?: number;
  /** Keep only the k most probable tokens; 0 (default): off. */
  topK?: number;
  seed: number;
  /** Rows per engine call (bounds the KV cache); default 64. */
  chunk?: number;
}

/** Completes each prompt (already encoded) once. */
export function complete(policy: Policy, tokenizer: TextTokenizer, prompts: readonly number[][], settings: GenerateSettings): Completion[] {
  const stops = stopIds(policy, tokenizer);
  const chunk = settings.chunk ?? 64;
  const out: Completion[] = [];
  for (let start = 0; start < prompts.length; start += chunk) {
    const part = prompts.slice(start, start + chunk);
    const g = policy.generate(part, {
      maxNewTokens: settings.maxNewTokens,
      temperature: settings.temperature,
      topP: settings.topP ?? 1,
      topK: settings.topK ?? 0,
      // Each chunk its own seed, derived from the caller's: the same call gives the same tokens.
      seed: (settings.seed + start) % Number.MAX_SAFE_INTEGER,
      stopIds: stops,
    });
    for (let i = 0; i < part.length; i++)
      out.push({ tokens: g.tokens[i], text: decodeCompletion(tokenizer, g.tokens[i], stops), stopped: g.stopped[i] });
  }
  return out;
}

export interface EvalResult {
  /** Fraction of examples whose greedy completion has the right answer. */
  accuracy: number;
  /** Mean completion length in tokens (a final stop id included). */
  meanLength: number;
  /** Mean of the run's summed reward. */
  rewardMean: number;
  /** Fraction cut at maxNewTokens. */
  truncatedFrac: number;
  samples: Array<{ prompt: string; answer: string; completion: string; correct: boolean; reward: number; length: number; stopped: boolean }>;
  seconds: number;
}

/** Greedy completions of held-out examples, scored for correctness and with the rewards. */
export async function evaluate(
  policy: Policy,
  tokenizer: TextTokenizer,
  examples: readonly Example[],
  rewards: readonly WeightedReward[],
  options: { maxNewTokens: number; onWarning?: (w: RewardWarning) => void },
): Promise<EvalResult> {
  const started = performance.now();
  const prompts = examples.map((e) => tokenizer.encodePrompt(e.prompt));
  const completions = complete(policy, tokenizer, prompts, { maxNewTokens: options.maxNewTokens, temperature: 0, seed: 0 });
  const texts = completions.map((c) => c.text);
  const scored = rewards.length ? (await scoreAll(rewards, examples, texts, { onWarning: options.onWarning })).total : new Float64Array(texts.length);
  let correct = 0, length = 0, truncated = 0, reward = 0;
  const samples: EvalResult['samples'] = [];
  examples.forEach((example, i) => {
    const ok = isCorrect(texts[i], example.answer);
    correct += ok ? 1 : 0;
    length += completions[i].tokens.length;
    truncated += completions[i].stopped ? 0 : 1;
    reward += scored[i];
    samples.push({
      prompt: example.prompt, answer: example.answer, completion: texts[i], correct: ok, reward: scored[i],
      length: completions[i].tokens.length, stopped: completions[i].stopped,
    });
  });
  const n = Math.max(examples.length, 1);
  return {
    accuracy: correct / n, meanLength: length / n, rewardMean: reward / n, truncatedFrac: truncated / n,
    samples, seconds: (performance.now() - started) / 1000,
  };
}

/**
 * Checks, before training starts, that every prompt of a finite task (its training
 * examples and held-out set) leaves room for --max-new-tokens within the model's
 * max_position_embeddings. One over-long JSONL prompt otherwise failed only when sampled,
 * in generate(), with an error blaming --max-new-tokens.
 */
export function checkPromptLengths(task: Task, tokenizer: TextTokenizer, maxPositions: number, maxNewTokens: number): void {
  const check = (example: Example, where: string) => {
    const length = tokenizer.encodePrompt(example.prompt).length;
    if (length + maxNewTokens > maxPositions) {
      const shown = example.prompt.length > 60 ? `${example.prompt.slice(0, 60)}…` : example.prompt;
      throw new RangeError(`--task ${task.name}: ${where} (prompt ${JSON.stringify(shown)}) is ${length} tokens; with --max-new-tokens ${maxNewTokens} ` +
        `it exceeds the model's max_position_embeddings ${maxPositions} (shorten or drop it, or lower --max-new-tokens)`);
    }
  };
  if (task.trainSize !== null) for (let i = 0; i < task.trainSize; i++) check(task.trainExample(i), `a training example`);
  task.evalSet().forEach((e, i) => check(e, `held-out example ${i}`));
}
