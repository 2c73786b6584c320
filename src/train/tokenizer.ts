// Tokenizers for the trainer: a thin wrapper over @huggingface/tokenizers (pure JS) that closes
// its sharp edges — ids are never undefined, decode([]) is '', ids are range-checked — and
// renders chat templates with @huggingface/jinja. The same wrapper serves the built-in tiny
// character tokenizer (assets/tiny) and a real model's tokenizer.json.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { ensureDir } from '../atomic_file.js';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';

export interface ChatMessage {
  role: string;
  content: string;
}

export interface EncodeOptions {
  /** Let the tokenizer's post-processor add its special tokens (BOS for the tiny and Llama tokenizers). Default false. */
  addSpecialTokens?: boolean;
  /** Throw on characters the vocabulary cannot represent instead of mapping them to the unknown token. */
  strict?: boolean;
}

export interface DecodeOptions {
  skipSpecialTokens?: boolean;
}

export interface ChatTemplateOptions {
  /** End with the assistant's turn opened (default true). */
  addGenerationPrompt?: boolean;
  /** Extra template variables (e.g. enable_thinking for Qwen3). */
  variables?: Record<string, unknown>;
}

export interface PromptOptions {
  /** A system message, when a chat template is used. */
  system?: string;
  variables?: Record<string, unknown>;
}

export interface LoadTokenizerOptions {
  /** Use the chat template when there is one (default true); false gives the plain prompt format. */
  useChatTemplate?: boolean;
  /** Overrides the end-of-sequence token named by tokenizer_config.json. */
  eosToken?: string;
}

export interface TextTokenizer {
  /** One past the largest token id (the model's embedding may have more rows). */
  readonly vocabSize: number;
  readonly eosId: number;
  /** The padding id: pad_token when configured, else the end-of-sequence id. */
  readonly padId: number;
  readonly bosId: number | null;
  readonly unkId: number | null;
  readonly specialIds: ReadonlySet<number>;
  readonly hasChatTemplate: boolean;
  /** End-of-sequence ids of the model directory's generation_config.json (Qwen's instruct models stop at two). */
  readonly generationEosIds: readonly number[];
  /** The source files (name → text), as written back by saveTokenizer. */
  readonly files: Readonly<Record<string, string>>;
  encode(text: string, options?: EncodeOptions): number[];
  decode(ids: ArrayLike<number>, options?: DecodeOptions): string;
  /** The token strings encode() would produce (for inspection and tests). */
  tokenize(text: string, options?: { addSpecialTokens?: boolean }): string[];
  tokenToId(token: string): number | undefined;
  idToToken(id: number): string | undefined;
  applyChatTemplate(messages: ChatMessage[], options?: ChatTemplateOptions): string;
  /** The text the policy continues: the chat-templated user turn, or the prompt itself. */
  formatPrompt(prompt: string, options?: PromptOptions): string;
  /** formatPrompt then encode (chat templates carry their own specials; a plain prompt gets the post-processor's). */
  encodePrompt(prompt: string, options?: PromptOptions & { strict?: boolean }): number[];
}

/** Where the committed tiny tokenizer lives (works from src via tsc output folders and from the package). */
export function tinyTokenizerDir(): string {
  return fileURLToPath(new URL('../../../assets/tiny/', import.meta.url));
}

// Tokens in tokenizer_config.json are strings, or AddedToken objects ({content, ...}) in older files.
function tokenString(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (value !== null && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return null;
}

function readJson(path: string, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new Error(`${what} ${path}: ${(err as Error).message}`, { cause: err });
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error(`${what} ${path}: expected a JSON object`);
  return value as Record<string, unknown>;
}

function pickChatTemplate(value: unknown, where: string): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') return value;
  // Multi-template form: [{name: 'default', template}, {name: 'tool_use', ...}].
  if (Array.isArray(value)) {
    const entries = value as Array<{ name?: unknown; template?: unknown }>;
    const chosen = entries.find((e) => e?.name === 'default') ?? entries[0];
    if (typeof chosen?.template === 'string') return chosen.template;
  }
  throw new Error(`${where}: chat_template must be a string or a list of {name, template}`);
}

const EOS_FALLBACKS = ['<|endoftext|>', '<|end_of_text|>', '</s>', '<|eos|>', '<eos>'];
// Stands in for a missing unknown token inside the library's BPE model: the library silently
// drops characters it cannot encode when a model has no unk_token; with this sentinel (not in
// any vocabulary) they come out as undefined ids instead, which encode() reports.
const MISSING_UNK = '\u0000lgrpo-missing-unk\u0000';

/**
 * Builds a tokenizer from parsed tokenizer.json and tokenizer_config.json objects. `source`
 * names them in error messages; `files` is what saveTokenizer writes back.
 */
export function createTokenizer(
  tokenizerJson: Record<string, unknown>,
  tokenizerConfig: Record<string, unknown> = {},
  options: LoadTokenizerOptions & { source?: string; chatTemplate?: string | null; files?: Record<string, string>; generationConfig?: Record<string, unknown> } = {},
): TextTokenizer {
  const source = options.source ?? 'tokenizer';
  // The library reads unk/bos/eos/pad from the config as plain strings.
  const config: Record<string, unknown> = { ...tokenizerConfig };
  for (const key of ['bos_token', 'eos_token', 'pad_token', 'unk_token']) {
    if (key in config) config[key] = tokenString(config[key]);
  }
  const json = {
    normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, added_tokens: [],
    ...tokenizerJson,
  };
  let lib: HfTokenizer;
  try {
    lib = new HfTokenizer(json, config);
  } catch (err) {
    throw new Error(`${source}: cannot build the tokenizer: ${(err as Error).message}`, { cause: err });
  }
  const model = lib.model as unknown as { unk_token?: string | null; unk_token_id?: number } | null;
  if (model === null) throw new Error(`${source}: tokenizer.json has no model`);
  const unkId = Number.isInteger(model.unk_token_id) ? model.unk_token_id! : null;
  if (unkId === null) model.unk_token = MISSING_UNK;

  const vocab = lib.get_vocab(true);
  let vocabSize = 0;
  for (const id of vocab.values()) if (id + 1 > vocabSize) vocabSize = id + 1;
  if (vocabSize === 0) throw new Error(`${source}: the vocabulary is empty`);

  const idOf = (key: string, token: string): number => {
    const id = lib.token_to_id(token);
    if (id === undefined) throw new Error(`${source}: ${key} ${JSON.stringify(token)} is not in the vocabulary`);
    return id;
  };
  const configured = (key: string): string | null => tokenString(config[key]);

  const eosToken = options.eosToken ?? configured('eos_token')
    ?? EOS_FALLBACKS.find((t) => lib.token_to_id(t) !== undefined) ?? null;
  if (eosToken === null) {
    throw new Error(`${source}: no end-of-sequence token: tokenizer_config.json has no eos_token and none of ${EOS_FALLBACKS.join(', ')} is in the vocabulary`);
  }
  const eosId = idOf('eos_token', eosToken);
  const padToken = configured('pad_token');
  const padId = padToken === null ? eosId : idOf('pad_token', padToken);
  const bosToken = configured('bos_token');
  const bosId = bosToken === null ? null : idOf('bos_token', bosToken);

  const specialIds = new Set<number>();
  for (const [id, token] of lib.get_added_tokens_decoder()) if (token.special) specialIds.add(id);
  for (const id of [eosId, padId, bosId, unkId]) if (id !== null) specialIds.add(id);

  const templateText = options.useChatTemplate === false ? null
    : options.chatTemplate !== undefined ? options.chatTemplate
    : pickChatTemplate(config.chat_template, source);
  let template: Template | null = null;
  if (templateText !== null) {
    try {
      template = new Template(templateText);
    } catch (err) {
      throw new Error(`${source}: cannot parse the chat template: ${(err as Error).message}`, { cause: err });
    }
  }

  const unknownCharacters = (text: string): string[] => {
    const bad = new Set<string>();
    for (const ch of text) {
      const ids = lib.encode(ch, { add_special_tokens: false }).ids as Array<number | undefined>;
      if (ids.some((id) => id === undefined || id === unkId)) bad.add(ch);
    }
    return [...bad];
  };
  const describeText = (text: string) => JSON.stringify(text.length > 60 ? text.slice(0, 60) + '…' : text);

  const encode = (text: string, opts: EncodeOptions = {}): number[] => {
    if (typeof text !== 'string') throw new TypeError(`text: expected a string, got ${typeof text}`);
    if (text === '' && !opts.addSpecialTokens) return [];
    const ids = lib.encode(text, { add_special_tokens: opts.addSpecialTokens ?? false }).ids as Array<number | undefined>;
    const undefinedAt = ids.findIndex((id) => !Number.isInteger(id));
    if (undefinedAt >= 0 || (opts.strict && unkId !== null && ids.includes(unkId))) {
      const chars = unknownCharacters(text);
      throw new RangeError(
        `encode: the vocabulary cannot represent ${chars.length ? chars.map((c) => JSON.stringify(c)).join(', ') : 'part of the text'} in ${describeText(text)}`,
      );
    }
    return ids as number[];
  };

  const decode = (ids: ArrayLike<number>, opts: DecodeOptions = {}): string => {
    const list = Array.from(ids);
    for (let i = 0; i < list.length; i++) {
      const id = list[i];
      if (!Number.isInteger(id) || id < 0 || id >= vocabSize || lib.id_to_token(id) === undefined) {
        throw new RangeError(`ids[${i}]: ${id} is not a token id of this tokenizer (vocabulary size ${vocabSize})`);
      }
    }
    // The library throws on an empty list, and on one left empty by skipping specials.
    const kept = opts.skipSpecialTokens ? list.filter((id) => !specialIds.has(id)) : list;
    if (kept.length === 0) return '';
    return lib.decode(kept, { skip_special_tokens: opts.skipSpecialTokens ?? false });
  };

  const specialVariables = {
    bos_token: bosToken ?? '', eos_token: eosToken, pad_token: padToken ?? '', unk_token: configured('unk_token') ?? '',
  };
  const applyChatTemplate = (messages: ChatMessage[], opts: ChatTemplateOptions = {}): string => {
    if (template === null) throw new Error(`${source}: no chat template (tokenizer_config.json has no chat_template)`);
    try {
      return template.render({
        ...specialVariables,
        ...opts.variables,
        messages,
        add_generation_prompt: opts.addGenerationPrompt ?? true,
      });
    } catch (err) {
      throw new Error(`${source}: chat template failed: ${(err as Error).message}`, { cause: err });
    }
  };

  const formatPrompt = (prompt: string, opts: PromptOptions = {}): string => {
    if (template === null) return prompt;
    const messages: ChatMessage[] = [];
    if (opts.system !== undefined) messages.push({ role: 'system', content: opts.system });
    messages.push({ role: 'user', content: prompt });
    return applyChatTemplate(messages, { variables: opts.variables });
  };

  const generationEos = options.generationConfig?.eos_token_id;
  const generationEosIds = (Array.isArray(generationEos) ? generationEos : generationEos === undefined || generationEos === null ? [] : [generationEos]).map((id, i) => {
    if (!Number.isSafeInteger(id) || (id as number) < 0 || (id as number) >= vocabSize)
      throw new Error(`${source}: generation_config.json eos_token_id${Array.isArray(generationEos) ? `[${i}]` : ''} must be a token id below ${vocabSize}, got ${JSON.stringify(id)}`);
    return id as number;
  });

  return {
    vocabSize, eosId, padId, bosId, unkId, specialIds,
    hasChatTemplate: template !== null,
    generationEosIds,
    files: Object.freeze({ ...(options.files ?? {
      'tokenizer.json': JSON.stringify(tokenizerJson),
      'tokenizer_config.json': JSON.stringify(tokenizerConfig),
    }) }),
    encode,
    decode,
    tokenize: (text, opts = {}) => lib.tokenize(text, { add_special_tokens: opts.addSpecialTokens ?? false }),
    tokenToId: (token) => lib.token_to_id(token),
    idToToken: (id) => lib.id_to_token(id),
    applyChatTemplate,
    formatPrompt,
    encodePrompt: (prompt, opts = {}) => template === null
      ? encode(prompt, { addSpecialTokens: true, strict: opts.strict })
      : encode(formatPrompt(prompt, opts), { addSpecialTokens: false, strict: opts.strict }),
  };
}

/**
 * Loads tokenizer.json (required), tokenizer_config.json, chat_template.jinja and
 * generation_config.json (optional) from a model directory, or the built-in tiny tokenizer for dir = 'tiny'.
 */
export function loadTokenizer(dir: string, options: LoadTokenizerOptions = {}): TextTokenizer {
  const root = dir === 'tiny' ? tinyTokenizerDir() : dir;
  const jsonPath = join(root, 'tokenizer.json');
  if (!existsSync(jsonPath)) throw new Error(`tokenizer: ${jsonPath} not found (a model directory needs a tokenizer.json)`);
  const files: Record<string, string> = { 'tokenizer.json': readFileSync(jsonPath, 'utf8') };
  const tokenizerJson = readJson(jsonPath, 'tokenizer');
  const configPath = join(root, 'tokenizer_config.json');
  let config: Record<string, unknown> = {};
  if (existsSync(configPath)) {
    files['tokenizer_config.json'] = readFileSync(configPath, 'utf8');
    config = readJson(configPath, 'tokenizer config');
  }
  // Newer transformers save the template beside the config instead of inside it.
  const jinjaPath = join(root, 'chat_template.jinja');
  let chatTemplate: string | null | undefined;
  if (config.chat_template === undefined && existsSync(jinjaPath)) {
    chatTemplate = files['chat_template.jinja'] = readFileSync(jinjaPath, 'utf8');
  }
  // Stop tokens of instruct models live in generation_config.json (kept with the tokenizer
  // files, so that a checkpoint's sampling stops where the original model's does).
  const generationPath = join(root, 'generation_config.json');
  let generationConfig: Record<string, unknown> | undefined;
  if (existsSync(generationPath)) {
    files['generation_config.json'] = readFileSync(generationPath, 'utf8');
    generationConfig = readJson(generationPath, 'generation config');
  }
  return createTokenizer(tokenizerJson, config, { ...options, source: root, chatTemplate, files, generationConfig });
}

/** Writes the tokenizer's source files into dir (for checkpoints), creating it if needed. */
export function saveTokenizer(tokenizer: TextTokenizer, dir: string): void {
  ensureDir(dir);
  for (const [name, text] of Object.entries(tokenizer.files)) writeFileSync(join(dir, name), text);
}
