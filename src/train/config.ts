// The trainer's configuration: every option of `lgrpo-native train` in one table (flag,
// type, range, default, help text), from which come the yargs definitions, the JSON form
// written into each run directory, and the validation of both.
//
// Precedence, lowest first: built-in defaults < the config saved in the checkpoint being
// resumed (--resume) < the --config JSON file < flags given on the command line. Only
// flags actually typed count as "given": the yargs definitions carry no defaults (they
// only show them in --help), so a default can never mask a value from the config file.
//
// Paths are resolved once, here: a relative path on the command line is relative to the
// working directory, one in a config file is relative to that file's folder (as tsconfig
// does), and the resolved config holds absolute paths, so the config.json saved in a run
// directory means the same thing from wherever it is read.
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { basename, dirname, extname, join, resolve } from 'node:path';
import type { Argv, Options } from 'yargs';
import type { ScheduleKind } from '../engine/schedule.js';
import type { AdvantageMode } from '../ops/group_advantages.js';
import type { Aggregation } from '../ops/grpo_loss.js';
import { writeFileAtomic } from '../atomic_file.js';
import { findCheckpoint } from './checkpoint.js';
import { METRICS_FILE } from './metrics.js';
import { completionOf, loadJsonl, splitExamples } from './tasks/jsonl.js';
import type { Example } from './tasks/types.js';
import { BUILTIN_REWARDS as BUILTIN_REWARD_FNS, type RewardFn } from './rewards/loader.js';

// ---------------------------------------------------------------------------------------
// Sizes of the default run. `npx lgrpo-native train` with no arguments trains the built-in
// tiny model on the built-in `arith` task and must finish on a 2-core CPU in at most 3
// minutes with held-out accuracy clearly above where it started: these are the knobs the
// trainer's author tunes for that budget (the contract's own defaults — group size 8,
// ε 0.2, β 0, λ init 0, r 1/9, λ lr 0.1, temperature 1 — are fixed below, not here).

// Steps, rate, schedule and warm-up length come from scripts/sweep-defaults.mjs (docs/defaults-sweep.md):
// held-out accuracy still rises late in a run, so the steps are as many as the time budget allows.
/** Training steps of the default run (after the supervised warm-up of DEFAULT_SFT_STEPS). */
export const DEFAULT_STEPS = 600;
/** Prompts per step P; each is sampled --group-size times. */
export const DEFAULT_PROMPTS_PER_STEP = 16;
/** Upper bound of the micro-batch when --micro-batch is not given: the largest divisor of P·G not above it is used. */
export const DEFAULT_MICRO_BATCH_CAP = 32;
/** Response length limit: the longest step-by-step arith answer is 35 tokens with its end token. */
export const DEFAULT_MAX_NEW_TOKENS = 40;
/** Peak AdamW learning rate of the policy. */
export const DEFAULT_LR = 1e-4;
/** The rate decays to 0 at --steps: the last policy, not a lucky eval in the middle, is the run's result. */
export const DEFAULT_LR_SCHEDULE: ScheduleKind = 'cosine';
/** Linear learning-rate warmup, in training steps. */
export const DEFAULT_WARMUP = 5;
/** Evaluate every this many steps. */
export const DEFAULT_EVAL_EVERY = 25;
/** Held-out prompts per evaluation. */
export const DEFAULT_EVAL_SIZE = 200;
/** Save a checkpoint every this many steps. */
export const DEFAULT_SAVE_EVERY = 100;
/** Checkpoints kept in the run directory. */
export const DEFAULT_KEEP_CHECKPOINTS = 2;
/** Supervised warm-up steps for the built-in tiny model when it has reference completions (0 for a model directory). */
export const DEFAULT_SFT_STEPS = 800;
/** The same for a task's own reference completions (a JSONL task, --sft-data): a few hundred epochs of 20 lines. */
export const DEFAULT_SFT_STEPS_OWN_DATA = 200;
/** Peak warm-up rate for the freshly initialised tiny model (high, as for pre-training tiny models). */
export const DEFAULT_SFT_LR_TINY = 3e-3;
/** Peak warm-up rate for a pretrained model directory (fine-tuning, as TRL's SFT default order). */
export const DEFAULT_SFT_LR_PRETRAINED = 1e-5;
/** Fewer held-out prompts than this draw a warning: one prompt moves accuracy by more than 5 points. */
export const MIN_USEFUL_EVAL_SIZE = 20;

// ---------------------------------------------------------------------------------------
// The configuration

export const BUILTIN_MODELS = ['tiny'] as const;
export const BUILTIN_TASKS = ['arith'] as const;
/** Names of the built-in reward terms (rewards/loader.ts): `math` (the answer is right), `format` (a well-formed answer line). */
export const BUILTIN_REWARDS: readonly string[] = Object.keys(BUILTIN_REWARD_FNS);
/** The reward when --reward is not given. */
export const DEFAULT_REWARD = ['math'];
export const LOSSES: readonly Aggregation[] = ['lambda', 'grpo', 'dapo', 'dr_grpo'];
export const ADVANTAGES: readonly AdvantageMode[] = ['std', 'mean', 'batch', 'rloo'];
export const LR_SCHEDULES: readonly ScheduleKind[] = ['constant', 'linear', 'cosine'];
/** Extensions Node can import without a loader (a .ts reward must be compiled first). */
export const REWARD_MODULE_EXTENSIONS = ['.js', '.mjs', '.cjs'];

/** The file a run directory keeps its resolved config in (configToJson's form). */
export const RUN_CONFIG_FILE = 'config.json';

export type TrainDevice = 'cpu' | `cuda:${number}`;

/** One --reward term; the trainer loads it with rewards/loader.ts resolveReward(name or path, weight). */
export type RewardSpec =
  | { kind: 'builtin'; name: string; weight: number }
  | { kind: 'module'; path: string; weight: number }
  /** A function passed from code (resolveConfig({reward: [fn]}) or {fn, weight, name}); config.json records its name only. */
  | { kind: 'function'; name: string; fn: RewardFn; weight: number };

/** What resolveConfig's `reward` takes from code, besides 'name', 'path.js' and 'name=W' strings. */
export type RewardInput = string | RewardFn | { fn: RewardFn; weight?: number; name?: string };

/** How config.json records a reward function (it cannot hold the function itself). */
const FUNCTION_REWARD_PREFIX = 'function:';

function isRewardFunctionInput(v: unknown): v is RewardFn | { fn: RewardFn; weight?: number; name?: string } {
  return typeof v === 'function' || (isPlainObject(v) && typeof v.fn === 'function');
}

export interface TrainConfig {
  /** 'tiny' or the absolute path of a Hugging Face model directory. */
  model: string;
  /** Frozen reference policy for the KL term: set (default: `model`) exactly when beta > 0, else null. */
  refModel: string | null;
  /** 'arith' or the absolute path of a JSONL file. */
  task: string;
  /** Absolute path of a JSONL file of held-out problems (then every line of --task trains), or null. */
  evalFile: string | null;
  /** Fraction of a JSONL task held out for evaluation when there is no evalFile. */
  evalFraction: number;
  /** Absolute path of a JSONL file of reference completions for the warm-up, or null (the task's own). */
  sftData: string | null;
  /** Resolved: peak learning rate of the supervised warm-up. */
  sftLr: number;
  /** 'auto': prompts go through the tokenizer's chat template when it has one; 'none': plain text. */
  chatTemplate: 'auto' | 'none';
  /** Summed reward terms. */
  reward: RewardSpec[];
  /** Seconds one reward call may take before it counts as a failure; 0: no limit. */
  rewardTimeout: number;
  evalSize: number;
  loss: Aggregation;
  lambdaInit: number;
  lambdaR: number;
  lambdaLr: number;
  lambdaFixed: boolean;
  advantage: AdvantageMode;
  epsilon: number;
  /** Resolved: --epsilon when not given. */
  epsilonHigh: number;
  beta: number;
  maskTruncated: boolean;
  dynamicSampling: boolean;
  groupSize: number;
  promptsPerStep: number;
  /** Resolved: always divides promptsPerStep · groupSize. */
  microBatch: number;
  iterations: number;
  /** Resolved: supervised warm-up steps before RL (DEFAULT_SFT_STEPS for tiny + arith, else 0). */
  sftSteps: number;
  lr: number;
  lrSchedule: ScheduleKind;
  warmup: number;
  weightDecay: number;
  /** 0: no clipping. */
  maxGradNorm: number;
  maxNewTokens: number;
  temperature: number;
  topP: number;
  steps: number;
  /** 0: no evaluation. */
  evalEvery: number;
  /** 0: only the final checkpoint. */
  saveEvery: number;
  /** 0: keep every checkpoint. */
  keepCheckpoints: number;
  /** Keep the weights of the best evaluation so far in <out>/best (BEST_DIR). */
  keepBest: boolean;
  /** Absolute path of the run directory. */
  out: string;
  /** Absolute path given to --resume (run directory or checkpoint), or null. */
  resume: string | null;
  /** Start over in an --out that holds metrics but no checkpoint (a run killed before its first). */
  restart: boolean;
  seed: number;
  device: TrainDevice;
  recompute: boolean;
}

export type ConfigKey = keyof TrainConfig;

type ValueKind = 'number' | 'integer' | 'boolean' | 'string' | 'strings';

interface OptionSpec {
  flag: string;
  kind: ValueKind;
  group: string;
  describe: string;
  /** undefined: derived from other options when not given (see resolve()). */
  default: unknown;
  /** What --help shows as the default when it is not a plain value. */
  defaultDescription?: string;
  choices?: readonly string[];
  min?: number;
  max?: number;
  /** Strict lower bound. */
  above?: number;
  /** May be explicitly unset: null in a config file. */
  nullable?: boolean;
  /** Only meaningful with --loss lambda (a warning otherwise). */
  lambdaOnly?: boolean;
}

const G_MODEL = 'Model and task:';
const G_LOSS = 'Loss:';
const G_BATCH = 'Batch:';
const G_OPT = 'Optimiser:';
const G_SAMPLE = 'Sampling:';
const G_RUN = 'Run:';

/** Every option, in --help order and in the order configToJson writes them. */
export const OPTIONS: { readonly [K in ConfigKey]: OptionSpec } = {
  model: {
    flag: 'model', kind: 'string', group: G_MODEL, default: 'tiny',
    describe: "policy to train: a Hugging Face model directory (config.json, safetensors, tokenizer.json) or 'tiny', the built-in tiny model",
  },
  refModel: {
    flag: 'ref-model', kind: 'string', group: G_MODEL, default: null, nullable: true,
    defaultDescription: '--model, frozen at step 0',
    describe: "reference policy of the KL penalty, used only when --beta > 0 (a model directory or 'tiny')",
  },
  task: {
    flag: 'task', kind: 'string', group: G_MODEL, default: 'arith',
    describe: "'arith' (built-in arithmetic problems) or a JSONL file with a prompt (or question) and an answer field on each line",
  },
  reward: {
    flag: 'reward', kind: 'strings', group: G_MODEL, default: DEFAULT_REWARD,
    describe: `reward terms, summed: a built-in (${BUILTIN_REWARDS.join(', ')}) or a .js/.mjs module exporting (example, completion) => number | Promise<number>; append =W to weight a term, e.g. --reward math --reward format=0.1 --reward ./brevity.js=0.05`,
  },
  rewardTimeout: {
    flag: 'reward-timeout', kind: 'number', group: G_MODEL, default: 60, min: 0,
    describe: 'seconds one reward call may take to settle; a call still pending then counts as a failure (0, like a throw); 0: no limit',
  },
  evalFile: {
    flag: 'eval-file', kind: 'string', group: G_MODEL, default: null, nullable: true,
    defaultDescription: 'none: --eval-fraction of --task is held out',
    describe: 'a JSONL file of held-out problems (same fields as --task); then every line of --task trains',
  },
  evalFraction: {
    flag: 'eval-fraction', kind: 'number', group: G_MODEL, default: 0.1, min: 0, max: 0.9,
    describe: 'fraction of a JSONL --task held out for evaluation (the split depends on the prompts only, never on --seed)',
  },
  sftData: {
    flag: 'sft-data', kind: 'string', group: G_MODEL, default: null, nullable: true,
    defaultDescription: "the task's own: arith's worked examples, or the \"solution\"/\"completion\" field of a JSONL task",
    describe: 'a JSONL file of reference completions for the supervised warm-up: a prompt (or question) and a completion (or solution) on each line',
  },
  chatTemplate: {
    flag: 'chat-template', kind: 'string', group: G_MODEL, default: 'auto', choices: ['auto', 'none'],
    describe: "auto: prompts go through the tokenizer's chat template (tokenizer_config.json chat_template) when it has one; none: the prompt text as it is",
  },
  evalSize: {
    flag: 'eval-size', kind: 'integer', group: G_MODEL, default: DEFAULT_EVAL_SIZE, min: 1,
    describe: 'held-out prompts scored with greedy decoding at each evaluation',
  },
  loss: {
    flag: 'loss', kind: 'string', group: G_LOSS, default: 'lambda', choices: LOSSES,
    describe: 'aggregation of token losses: lambda (λ-GRPO, learned length preference), grpo (per-response mean), dapo (token mean), dr_grpo (constant normaliser)',
  },
  lambdaInit: {
    flag: 'lambda-init', kind: 'number', group: G_LOSS, default: 0, lambdaOnly: true,
    describe: 'initial λ (0: every response weighs the same, as DAPO)',
  },
  lambdaR: {
    flag: 'lambda-r', kind: 'number', group: G_LOSS, default: 1 / 9, min: 0, lambdaOnly: true,
    defaultDescription: '0.1111 (1/9)',
    describe: 'slope r of the λ weights h = max(1 + r·z, 1e-6), z the standardised response length',
  },
  lambdaLr: {
    flag: 'lambda-lr', kind: 'number', group: G_LOSS, default: 0.1, min: 0, lambdaOnly: true,
    describe: 'learning rate of λ (plain SGD)',
  },
  lambdaFixed: {
    flag: 'lambda-fixed', kind: 'boolean', group: G_LOSS, default: false, lambdaOnly: true,
    describe: 'keep λ at --lambda-init instead of learning it',
  },
  advantage: {
    flag: 'advantage', kind: 'string', group: G_LOSS, default: 'std', choices: ADVANTAGES,
    describe: 'group advantage: std ((R − mean)/std, GRPO), mean (R − mean, Dr. GRPO), batch (std over the whole batch), rloo (leave-one-out)',
  },
  epsilon: {
    flag: 'epsilon', kind: 'number', group: G_LOSS, default: 0.2, min: 0,
    describe: 'clip range ε: ratios outside [1 − ε, 1 + ε_high] are clipped',
  },
  epsilonHigh: {
    flag: 'epsilon-high', kind: 'number', group: G_LOSS, default: undefined, min: 0,
    defaultDescription: '--epsilon',
    describe: 'upper clip ε_high (DAPO clip-higher uses 0.28)',
  },
  beta: {
    flag: 'beta', kind: 'number', group: G_LOSS, default: 0, min: 0,
    describe: 'coefficient of the k3 KL penalty to the reference policy (0: none, and no reference is kept)',
  },
  maskTruncated: {
    flag: 'mask-truncated', kind: 'boolean', group: G_LOSS, default: false,
    describe: 'leave responses that hit --max-new-tokens without an end token out of the loss',
  },
  dynamicSampling: {
    flag: 'dynamic-sampling', kind: 'boolean', group: G_LOSS, default: false,
    describe: 'drop groups whose rewards are all equal and sample more prompts to refill the step (DAPO)',
  },
  groupSize: {
    flag: 'group-size', kind: 'integer', group: G_BATCH, default: 8, min: 2,
    describe: 'responses G sampled per prompt',
  },
  promptsPerStep: {
    flag: 'prompts-per-step', kind: 'integer', group: G_BATCH, default: DEFAULT_PROMPTS_PER_STEP, min: 1,
    describe: 'prompts P per optimiser step (a step trains on P × G responses)',
  },
  microBatch: {
    flag: 'micro-batch', kind: 'integer', group: G_BATCH, default: undefined, min: 1,
    defaultDescription: `the largest divisor of P × G up to ${DEFAULT_MICRO_BATCH_CAP}`,
    describe: 'responses per forward/backward pass; must divide P × G (the loss is the same for any split)',
  },
  iterations: {
    flag: 'iterations', kind: 'integer', group: G_BATCH, default: 1, min: 1,
    describe: 'passes μ over each rollout batch (> 1 makes the policy drift from the sampler, where clipping acts)',
  },
  sftSteps: {
    flag: 'sft-steps', kind: 'integer', group: G_OPT, default: undefined, min: 0,
    defaultDescription: `for --model tiny: ${DEFAULT_SFT_STEPS} on arith, ${DEFAULT_SFT_STEPS_OWN_DATA} on a task's own completions; else 0`,
    describe: "supervised warm-up steps on reference completions (arith's worked examples, a JSONL task's \"solution\"/\"completion\" field, or --sft-data; 32 per step) before RL starts, so a fresh model starts RL with a non-zero reward",
  },
  sftLr: {
    flag: 'sft-lr', kind: 'number', group: G_OPT, default: undefined, above: 0,
    defaultDescription: `${DEFAULT_SFT_LR_TINY.toExponential()} for --model tiny (a freshly initialised model), ${DEFAULT_SFT_LR_PRETRAINED.toExponential()} for a model directory`,
    describe: 'peak learning rate of the supervised warm-up (linear warmup, cosine decay)',
  },
  lr: {
    flag: 'lr', kind: 'number', group: G_OPT, default: DEFAULT_LR, min: 0,
    describe: 'peak AdamW learning rate',
  },
  lrSchedule: {
    flag: 'lr-schedule', kind: 'string', group: G_OPT, default: DEFAULT_LR_SCHEDULE, choices: LR_SCHEDULES,
    describe: 'after the warmup: hold the peak, or decay linearly or along a cosine to 0 at --steps',
  },
  warmup: {
    flag: 'warmup', kind: 'integer', group: G_OPT, default: DEFAULT_WARMUP, min: 0,
    describe: 'linear learning-rate warmup, in training steps (the rate of a step holds for all its --iterations updates)',
  },
  weightDecay: {
    flag: 'weight-decay', kind: 'number', group: G_OPT, default: 0, min: 0,
    describe: 'AdamW decoupled weight decay (not applied to biases and norm weights)',
  },
  maxGradNorm: {
    flag: 'max-grad-norm', kind: 'number', group: G_OPT, default: 1, min: 0,
    describe: 'clip the global gradient norm to this (0: no clipping)',
  },
  maxNewTokens: {
    flag: 'max-new-tokens', kind: 'integer', group: G_SAMPLE, default: DEFAULT_MAX_NEW_TOKENS, min: 1,
    describe: 'response length limit in tokens',
  },
  temperature: {
    flag: 'temperature', kind: 'number', group: G_SAMPLE, default: 1, above: 0,
    describe: 'sampling temperature of the rollouts (evaluation is greedy)',
  },
  topP: {
    flag: 'top-p', kind: 'number', group: G_SAMPLE, default: 1, above: 0, max: 1,
    describe: 'nucleus sampling: sample from the smallest token set holding this probability mass',
  },
  steps: {
    flag: 'steps', kind: 'integer', group: G_RUN, default: DEFAULT_STEPS, min: 1,
    describe: 'training steps: each samples P × G responses and makes --iterations optimiser updates (when resuming: the total, counting the steps already done)',
  },
  evalEvery: {
    flag: 'eval-every', kind: 'integer', group: G_RUN, default: DEFAULT_EVAL_EVERY, min: 0,
    describe: 'evaluate on held-out prompts every N steps (0: never)',
  },
  saveEvery: {
    flag: 'save-every', kind: 'integer', group: G_RUN, default: DEFAULT_SAVE_EVERY, min: 0,
    describe: 'save a checkpoint every N steps (0: only at the end)',
  },
  keepCheckpoints: {
    flag: 'keep-checkpoints', kind: 'integer', group: G_RUN, default: DEFAULT_KEEP_CHECKPOINTS, min: 0,
    describe: 'keep only the newest K checkpoints (0: keep all)',
  },
  keepBest: {
    flag: 'keep-best', kind: 'boolean', group: G_RUN, default: false,
    describe: "also keep the weights of the best evaluation so far (held-out accuracy, step 0 included) in <out>/best, beside the newest checkpoints; eval and sample take --model <out>/best",
  },
  out: {
    flag: 'out', kind: 'string', group: G_RUN, default: undefined,
    defaultDescription: 'runs/<task>-<loss>-<time>, or the resumed run',
    describe: 'run directory: config, metrics.jsonl, samples, checkpoints, report.html',
  },
  restart: {
    flag: 'restart', kind: 'boolean', group: G_RUN, default: false,
    describe: 'start over in an --out directory whose run stopped before its first checkpoint (its metrics are cleared); refused when it holds a checkpoint',
  },
  resume: {
    flag: 'resume', kind: 'string', group: G_RUN, default: null, nullable: true,
    defaultDescription: 'none',
    describe: "continue a run: its directory (its latest checkpoint) or one checkpoint directory; the checkpoint's config is the base that --config and flags override",
  },
  seed: {
    flag: 'seed', kind: 'integer', group: G_RUN, default: 0, min: 0, max: 4294967295,
    describe: 'seed of every random choice (data order, sampling, the tiny model\'s initial weights)',
  },
  device: {
    flag: 'device', kind: 'string', group: G_RUN, default: 'cpu',
    describe: "'cpu', 'cuda' or 'cuda:N'",
  },
  recompute: {
    flag: 'recompute', kind: 'boolean', group: G_RUN, default: false,
    describe: "keep each layer's input only and recompute the rest in backward: activation memory O(L·N·D) instead of O(L·N·(6D + 3I)), the same results, about a third more compute",
  },
};

export const CONFIG_KEYS = Object.keys(OPTIONS) as ConfigKey[];

/**
 * Keys that may change when a run is resumed without changing what it learns; every
 * other key takes part in configHash, so a resumed run can tell it is continuing the same
 * experiment. `steps` takes part only when a decaying schedule makes the rates depend on it.
 */
export const RESUME_MUTABLE_KEYS: readonly ConfigKey[] = ['out', 'resume', 'device', 'recompute', 'steps', 'evalEvery', 'saveEvery', 'keepCheckpoints', 'keepBest', 'rewardTimeout', 'restart'];

export type ConfigSource = 'default' | 'checkpoint' | 'file' | 'cli';

export interface ResolvedConfig {
  config: TrainConfig;
  /** Where each value came from. */
  sources: Record<ConfigKey, ConfigSource>;
  /** Options that are valid but have no effect, or a likely mistake; the CLI prints them. */
  warnings: string[];
  /** The --resume checkpoint, found and validated. */
  checkpoint?: { dir: string; runDir: string; step: number };
}

export interface ResolveOptions {
  /** Base of relative command-line paths; default process.cwd(). */
  cwd?: string;
  /** Clock of the default run name; default now. */
  now?: Date;
}

export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(problems.join('\n'));
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

// ---------------------------------------------------------------------------------------
// yargs

const FLAG_TO_KEY = new Map<string, ConfigKey>();
for (const key of CONFIG_KEYS) {
  FLAG_TO_KEY.set(OPTIONS[key].flag, key);
  FLAG_TO_KEY.set(key, key);
}

function showValue(value: unknown): string {
  if (Array.isArray(value)) return value.join(' ');
  return String(value);
}

/**
 * Adds every train option (plus --config) to a yargs instance, grouped for --help. No
 * yargs defaults are set: resolveConfig must see which flags were really given.
 * `omit` leaves options out (a command that sets them itself, e.g. compare's --loss);
 * `defaults` replaces what --help shows as the default of an option the command sets otherwise.
 */
export function trainOptions<T>(y: Argv<T>, omit: readonly ConfigKey[] = [], defaults: Partial<Record<ConfigKey, string>> = {}): Argv<T> {
  let out = y;
  for (const key of CONFIG_KEYS) {
    if (omit.includes(key)) continue;
    const spec = OPTIONS[key];
    const option: Options = {
      type: spec.kind === 'integer' ? 'number' : spec.kind === 'strings' ? 'string' : spec.kind,
      describe: spec.describe,
      group: spec.group,
      defaultDescription: defaults[key] ?? spec.defaultDescription ?? showValue(spec.default),
    };
    if (spec.kind === 'strings') option.array = true;
    if (spec.kind !== 'boolean') option.requiresArg = true;
    if (spec.choices) option.choices = [...spec.choices];
    out = out.option(spec.flag, option) as Argv<T>;
  }
  return out.option('config', {
    type: 'string',
    requiresArg: true,
    group: G_RUN,
    describe: 'JSON file of options keyed by flag name, e.g. {"group-size": 8} (a run\'s config.json works); flags given here override it',
  }) as Argv<T>;
}

// ---------------------------------------------------------------------------------------
// Validation

interface Given {
  value: unknown;
  source: ConfigSource;
  /** Appended to messages: where the value came from. */
  where: string;
  /** Folder relative paths are taken from. */
  base: string;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function formatGot(value: unknown): string {
  if (typeof value === 'number') return Number.isNaN(value) ? 'NaN (not a number)' : String(value);
  return JSON.stringify(value) ?? String(value);
}

function rangeText(spec: OptionSpec): string {
  const noun = spec.kind === 'integer' ? 'an integer' : 'a number';
  const lo = spec.above !== undefined ? `> ${spec.above}` : spec.min !== undefined ? `>= ${spec.min}` : undefined;
  if (lo !== undefined && spec.max !== undefined) {
    const open = spec.above !== undefined ? '(' : '[';
    return `${noun} in ${open}${spec.above ?? spec.min}, ${spec.max}]`;
  }
  if (lo !== undefined) return `${noun} ${lo}`;
  if (spec.max !== undefined) return `${noun} <= ${spec.max}`;
  return spec.kind === 'integer' ? 'an integer' : 'a finite number';
}

type Checked = { ok: true; value: unknown } | { ok: false; problem: string };

/** Checks one value against its spec; the problem, if any, is phrased to follow the flag. */
function checkValue(spec: OptionSpec, value: unknown): Checked {
  const bad = (problem: string): Checked => ({ ok: false, problem });
  if (Array.isArray(value) && spec.kind !== 'strings') return bad(`given more than once (${value.map(formatGot).join(', ')})`);
  switch (spec.kind) {
    case 'number':
    case 'integer': {
      const ok =
        typeof value === 'number' &&
        Number.isFinite(value) &&
        (spec.kind === 'number' || Number.isSafeInteger(value)) &&
        (spec.min === undefined || value >= spec.min) &&
        (spec.above === undefined || value > spec.above) &&
        (spec.max === undefined || value <= spec.max);
      return ok ? { ok, value } : bad(`expected ${rangeText(spec)}, got ${formatGot(value)}`);
    }
    case 'boolean':
      return typeof value === 'boolean' ? { ok: true, value } : bad(`expected true or false, got ${formatGot(value)}`);
    case 'string':
      if (typeof value !== 'string' || value.length === 0) return bad(`expected a non-empty string, got ${formatGot(value)}`);
      if (spec.choices && !spec.choices.includes(value)) return bad(`expected one of ${spec.choices.join(', ')}, got ${formatGot(value)}`);
      return { ok: true, value };
    case 'strings': {
      // --reward also takes functions from code (resolveConfig({reward: [fn]})).
      const fnOk = (v: unknown): boolean => spec.flag === 'reward' && isRewardFunctionInput(v);
      const list = typeof value === 'string' || fnOk(value) ? [value] : value;
      if (!Array.isArray(list) || list.length === 0 || !list.every((v) => (typeof v === 'string' && v.length > 0) || fnOk(v)))
        return bad(`expected one or more non-empty strings${spec.flag === 'reward' ? ' or reward functions' : ''}, got ${formatGot(value)}`);
      return { ok: true, value: [...list] };
    }
  }
}

/** Levenshtein distance, for "did you mean" hints (here and in the CLI's usage errors). */
export function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++)
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length][b.length];
}

function suggest(key: string): string {
  // Edit distance to the known flags: a typo of one or two characters gets a hint.
  let best = '';
  let bestDistance = Infinity;
  for (const k of CONFIG_KEYS) {
    const flag = OPTIONS[k].flag;
    const dist = editDistance(key.toLowerCase(), flag);
    if (dist < bestDistance) [best, bestDistance] = [flag, dist];
  }
  return bestDistance <= 2 ? ` (did you mean "${best}"?)` : '';
}

/** A config layer from a JSON object (a --config file, or the config saved in a checkpoint). */
function objectLayer(
  json: unknown, source: ConfigSource, where: string, base: string, problems: string[], skip: readonly ConfigKey[] = [],
): Map<ConfigKey, Given> {
  const layer = new Map<ConfigKey, Given>();
  if (!isPlainObject(json)) {
    problems.push(`${source === 'file' ? '--config' : '--resume'}: ${where}: expected a JSON object of options, got ${formatGot(json)}`);
    return layer;
  }
  for (const [name, value] of Object.entries(json)) {
    const key = FLAG_TO_KEY.get(name);
    if (key === undefined) {
      problems.push(`"${name}": unknown option in ${where}${suggest(name)}`);
      continue;
    }
    if (layer.has(key)) {
      problems.push(`--${OPTIONS[key].flag}: given twice in ${where} (as "${OPTIONS[key].flag}" and "${key}")`);
      continue;
    }
    if (skip.includes(key)) continue;
    layer.set(key, { value, source, where: ` (in ${where})`, base });
  }
  return layer;
}

function cliLayer(args: Record<string, unknown>, cwd: string): Map<ConfigKey, Given> {
  const layer = new Map<ConfigKey, Given>();
  // yargs sets both spellings of a flag (group-size and groupSize); other keys (_, $0, a
  // calling command's own options) are not train options and are left to yargs' strict mode.
  for (const key of CONFIG_KEYS) {
    const flag = OPTIONS[key].flag;
    const value = args[flag] !== undefined ? args[flag] : args[key];
    if (value !== undefined) layer.set(key, { value, source: 'cli', where: '', base: cwd });
  }
  return layer;
}

function readConfigFile(path: string, problems: string[]): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    problems.push(`--config: cannot read ${path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
    return undefined;
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    problems.push(`--config: ${path} is not valid JSON (${(e as Error).message})`);
    return undefined;
  }
}

function statOrUndefined(path: string): ReturnType<typeof statSync> | undefined {
  try {
    return statSync(path);
  } catch {
    return undefined;
  }
}

function parseReward(input: RewardInput, base: string): RewardSpec | string {
  if (typeof input === 'function') return { kind: 'function', name: input.name || 'reward', fn: input, weight: 1 };
  if (typeof input !== 'string') {
    const weight = input.weight ?? 1;
    if (typeof weight !== 'number' || !Number.isFinite(weight)) return `the weight of reward function ${input.name ?? input.fn.name ?? ''} must be a finite number, got ${formatGot(weight)}`;
    return { kind: 'function', name: input.name ?? (input.fn.name || 'reward'), fn: input.fn, weight };
  }
  const entry = input;
  if (entry.startsWith(FUNCTION_REWARD_PREFIX))
    return `${JSON.stringify(entry)} was a reward function passed from code, which a config file cannot hold: pass the function again (resolveConfig({reward: [fn]})) or give --reward a module path`;
  let spec = entry;
  let weight = 1;
  const eq = entry.lastIndexOf('=');
  if (eq > 0) {
    const w = entry.slice(eq + 1).trim();
    if (w !== '' && Number.isFinite(Number(w))) {
      weight = Number(w);
      spec = entry.slice(0, eq);
    } else if (/^[-+.\deE]*$/.test(w) || BUILTIN_REWARDS.includes(entry.slice(0, eq)) || REWARD_MODULE_EXTENSIONS.includes(extname(entry.slice(0, eq)))) {
      return `the weight in ${JSON.stringify(entry)} is not a number: ${JSON.stringify(w)} (write NAME=W with W a number, e.g. ${entry.slice(0, eq)}=0.5)`;
    }
  }
  if (BUILTIN_REWARDS.includes(spec)) return { kind: 'builtin', name: spec, weight };
  const looksLikePath = /[/\\]/.test(spec) || extname(spec) !== '';
  if (!looksLikePath) return `unknown built-in ${JSON.stringify(spec)} (built-ins: ${BUILTIN_REWARDS.join(', ')}; a module path must end in .js, .mjs or .cjs)`;
  const ext = extname(spec);
  if (!REWARD_MODULE_EXTENSIONS.includes(ext))
    return `${spec}: a reward module must be JavaScript (${REWARD_MODULE_EXTENSIONS.join(', ')})${ext === '.ts' || ext === '.mts' ? '; compile TypeScript first' : ''}`;
  const path = resolve(base, spec);
  const st = statOrUndefined(path);
  if (!st) return `${path} does not exist`;
  if (!st.isFile()) return `${path} is not a file`;
  return { kind: 'module', path, weight };
}

function rewardToString(r: RewardSpec): string {
  const spec = r.kind === 'builtin' ? r.name : r.kind === 'module' ? r.path : `${FUNCTION_REWARD_PREFIX}${r.name}`;
  return r.weight === 1 ? spec : `${spec}=${r.weight}`;
}

function largestDivisorUpTo(n: number, cap: number): number {
  for (let d = Math.min(n, cap); d > 1; d--) if (n % d === 0) return d;
  return 1;
}

function divisors(n: number): number[] {
  const out: number[] = [];
  for (let d = 1; d <= n; d++) if (n % d === 0) out.push(d);
  return out;
}

function utcStamp(now: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${now.getUTCFullYear()}${p(now.getUTCMonth() + 1)}${p(now.getUTCDate())}-${p(now.getUTCHours())}${p(now.getUTCMinutes())}${p(now.getUTCSeconds())}`;
}

const DEVICE_PATTERN = /^(cpu|cuda|cuda:\d{1,3})$/;

/**
 * The config of a train run: defaults < the resumed checkpoint's config < the --config
 * file (`configFile`, else cliArgs.config) < flags in cliArgs (a yargs argv, or any object
 * keyed by flag or camelCase name; keys that are not train options are ignored there, as
 * yargs' strict mode rejects unknown flags itself). Throws a ConfigError listing every
 * problem, each starting with the option it concerns.
 */
export function resolveConfig(cliArgs: Record<string, unknown>, configFile?: string, options: ResolveOptions = {}): ResolvedConfig {
  const cwd = options.cwd ?? process.cwd();
  const problems: string[] = [];
  const warnings: string[] = [];

  const cli = cliLayer(cliArgs, cwd);
  const fileArg = configFile ?? (cliArgs.config as string | undefined);
  let file = new Map<ConfigKey, Given>();
  if (fileArg !== undefined) {
    if (typeof fileArg !== 'string' || fileArg === '') {
      problems.push(`--config: expected a file path, got ${formatGot(fileArg)}`);
    } else {
      const path = resolve(cwd, fileArg);
      const json = readConfigFile(path, problems);
      // A run's own config.json (metrics beside it) describes that run's directory: its
      // out, resume and restart are the run's, not a new run's, and are not reused.
      const isRunConfig = basename(path) === RUN_CONFIG_FILE && statOrUndefined(join(dirname(path), METRICS_FILE)) !== undefined;
      if (json !== undefined) file = objectLayer(json, 'file', path, dirname(path), problems, isRunConfig ? ['out', 'resume', 'restart'] : []);
    }
  }

  // --resume is needed before anything else: the checkpoint's config is the base layer.
  const resumeGiven = cli.get('resume') ?? file.get('resume');
  let checkpoint: ResolvedConfig['checkpoint'];
  let saved = new Map<ConfigKey, Given>();
  if (resumeGiven !== undefined && resumeGiven.value !== null) {
    const checked = checkValue(OPTIONS.resume, resumeGiven.value);
    if (checked.ok) {
      try {
        const found = findCheckpoint(resolve(resumeGiven.base, checked.value as string));
        checkpoint = { dir: found.dir, runDir: found.runDir, step: found.step };
        if (found.state.config !== undefined)
          saved = objectLayer(found.state.config, 'checkpoint', `checkpoint ${found.dir}`, cwd, problems, ['out', 'resume']);
      } catch (e) {
        problems.push(`--resume: ${(e as Error).message.replace(/^resume: /, '')}${resumeGiven.where}`);
      }
    }
    // an invalid value is reported with the other options below
  }

  const layers = [saved, file, cli];
  const raw = {} as Record<ConfigKey, unknown>;
  const sources = {} as Record<ConfigKey, ConfigSource>;
  const origin = {} as Record<ConfigKey, Given | undefined>;
  for (const key of CONFIG_KEYS) {
    const spec = OPTIONS[key];
    let given: Given | undefined;
    for (const layer of layers) given = layer.get(key) ?? given;
    origin[key] = given;
    sources[key] = given?.source ?? 'default';
    if (given === undefined || (given.value === null && spec.nullable)) {
      raw[key] = given === undefined ? spec.default : null;
      continue;
    }
    const checked = checkValue(spec, given.value);
    if (checked.ok) raw[key] = checked.value;
    else problems.push(`--${spec.flag}: ${checked.problem}${given.where}`);
  }
  if (problems.length) throw new ConfigError(problems);

  const fail = (key: ConfigKey, message: string): void => {
    problems.push(`--${OPTIONS[key].flag}: ${message}${origin[key]?.where ?? ''}`);
  };
  const explicit = (key: ConfigKey): boolean => sources[key] === 'file' || sources[key] === 'cli';
  const baseOf = (key: ConfigKey): string => origin[key]?.base ?? cwd;

  const modelPath = (key: 'model' | 'refModel', value: string): string => {
    if ((BUILTIN_MODELS as readonly string[]).includes(value)) return value;
    const path = resolve(baseOf(key), value);
    const st = statOrUndefined(path);
    if (!st) fail(key, `${path} does not exist (expected a Hugging Face model directory or ${BUILTIN_MODELS.map((m) => `'${m}'`).join(', ')})`);
    else if (!st.isDirectory()) fail(key, `${path} is not a directory (expected a Hugging Face model directory or ${BUILTIN_MODELS.map((m) => `'${m}'`).join(', ')})`);
    return path;
  };

  const model = modelPath('model', raw.model as string);

  let task = raw.task as string;
  if (!(BUILTIN_TASKS as readonly string[]).includes(task)) {
    task = resolve(baseOf('task'), task);
    const st = statOrUndefined(task);
    if (!st) fail('task', `${task} does not exist (expected ${BUILTIN_TASKS.map((t) => `'${t}'`).join(', ')} or a JSONL file)`);
    else if (!st.isFile()) fail('task', `${task} is not a file (expected ${BUILTIN_TASKS.map((t) => `'${t}'`).join(', ')} or a JSONL file)`);
  }

  const reward: RewardSpec[] = [];
  for (const entry of raw.reward as RewardInput[]) {
    const parsed = parseReward(entry, baseOf('reward'));
    if (typeof parsed === 'string') fail('reward', parsed);
    else reward.push(parsed);
  }

  const deviceText = raw.device as string;
  let device: TrainDevice = 'cpu';
  if (!DEVICE_PATTERN.test(deviceText)) fail('device', `expected 'cpu', 'cuda' or 'cuda:N', got ${formatGot(deviceText)}`);
  else device = (deviceText === 'cuda' ? 'cuda:0' : deviceText) as TrainDevice;

  const loss = raw.loss as Aggregation;
  const groupSize = raw.groupSize as number;
  const promptsPerStep = raw.promptsPerStep as number;
  const rows = groupSize * promptsPerStep;
  let microBatch = raw.microBatch as number | undefined;
  if (microBatch === undefined) {
    microBatch = largestDivisorUpTo(rows, DEFAULT_MICRO_BATCH_CAP);
  } else if (rows % microBatch !== 0) {
    const ds = divisors(rows);
    fail('microBatch', `${microBatch} does not divide --prompts-per-step × --group-size = ${promptsPerStep} × ${groupSize} = ${rows} (divisors: ${ds.length > 12 ? `${ds.slice(0, 12).join(', ')}, …` : ds.join(', ')})`);
  }

  // A JSONL task is read here, so that a malformed file, an empty split or a held-out set
  // too small to measure anything is said before any run directory exists.
  const isJsonl = !(BUILTIN_TASKS as readonly string[]).includes(task);
  const evalFraction = raw.evalFraction as number;
  let evalFile: string | null = null;
  if (raw.evalFile !== null) {
    evalFile = resolve(baseOf('evalFile'), raw.evalFile as string);
    if (!isJsonl) fail('evalFile', `only a JSONL --task takes a held-out file (task is ${task}, whose held-out split is built in)`);
    else {
      const st = statOrUndefined(evalFile);
      if (!st) fail('evalFile', `${evalFile} does not exist`);
      else if (!st.isFile()) fail('evalFile', `${evalFile} is not a file`);
    }
  }
  if (!isJsonl && explicit('evalFraction')) warnings.push(`--eval-fraction: ignored, --task ${task} has its own held-out split`);
  if (evalFile !== null && explicit('evalFraction')) warnings.push('--eval-fraction: ignored, --eval-file holds the held-out problems');
  let trainExamples: Example[] | null = null;
  let heldOut: number | null = null;
  if (isJsonl && problems.length === 0) {
    try {
      const all = loadJsonl(task);
      if (evalFile !== null) {
        trainExamples = all;
        heldOut = loadJsonl(evalFile).length;
      } else {
        const split = splitExamples(all, evalFraction);
        trainExamples = split.train;
        heldOut = split.eval.length;
        if (trainExamples.length === 0) fail('task', `${task} has ${all.length} problem${all.length === 1 ? '' : 's'}: none is left to train on after --eval-fraction ${evalFraction}`);
      }
    } catch (e) {
      fail(evalFile !== null && !(e as Error).message.includes(task) ? 'evalFile' : 'task', (e as Error).message.replace(/^task file /, ''));
    }
  }
  const evalSize = raw.evalSize as number;
  if (heldOut !== null && problems.length === 0 && (raw.evalEvery as number) > 0) {
    const used = Math.min(heldOut, evalSize);
    if (heldOut === 0)
      warnings.push(`--eval-fraction: 0 holds nothing out of ${basename(task)}: no evaluation will run (give --eval-file or an --eval-fraction > 0)`);
    else if (used < MIN_USEFUL_EVAL_SIZE)
      warnings.push(`--eval-fraction: only ${used} held-out problem${used === 1 ? '' : 's'} (${evalFile !== null ? basename(evalFile) : `${(100 * evalFraction).toFixed(0)}% of ${basename(task)}`}): ` +
        `one problem moves accuracy by ${(1 / used).toFixed(2)}, too coarse to measure a gain; aim for at least ${MIN_USEFUL_EVAL_SIZE} (more problems, a larger --eval-fraction, or --eval-file)`);
  }

  let sftData: string | null = null;
  if (raw.sftData !== null) {
    sftData = resolve(baseOf('sftData'), raw.sftData as string);
    const st = statOrUndefined(sftData);
    if (!st) fail('sftData', `${sftData} does not exist`);
    else if (!st.isFile()) fail('sftData', `${sftData} is not a file`);
    else {
      try {
        const rows = loadJsonl(sftData, { requireAnswer: false });
        const missing = rows.findIndex((r) => completionOf(r) === null);
        if (missing >= 0) fail('sftData', `${sftData}: line with prompt ${JSON.stringify(rows[missing].prompt.slice(0, 40))} has no "completion" (or "solution") field`);
      } catch (e) {
        fail('sftData', (e as Error).message.replace(/^task file /, ''));
      }
    }
  }
  const taskHasCompletions = trainExamples !== null && trainExamples.some((e) => completionOf(e) !== null);
  const hasWarmupData = sftData !== null || task === 'arith' || taskHasCompletions;
  let sftSteps = raw.sftSteps as number | undefined;
  if (sftSteps === undefined) {
    sftSteps = model === 'tiny' && hasWarmupData ? (task === 'arith' && sftData === null ? DEFAULT_SFT_STEPS : DEFAULT_SFT_STEPS_OWN_DATA) : 0;
  } else if (sftSteps > 0 && !hasWarmupData && problems.length === 0) {
    fail('sftSteps', `the supervised warm-up needs reference completions: give the lines of ${basename(task)} a "solution" (or "completion") field, or pass --sft-data file.jsonl`);
  }
  if (sftData !== null && sftSteps === 0 && explicit('sftData'))
    warnings.push(`--sft-data: ignored, --sft-steps is 0${model === 'tiny' ? '' : ' (a model directory gets no warm-up unless --sft-steps is given)'}`);
  if (model === 'tiny' && sftSteps === 0 && raw.resume === null && problems.length === 0)
    warnings.push(
      `--model tiny starts from random weights and gets no supervised warm-up${hasWarmupData ? ' (--sft-steps 0)' : ` (${basename(task)} has no "solution" or "completion" field, and no --sft-data was given)`}: ` +
      'RL from an untrained model finds no reward to learn from, and accuracy stays at 0. ' +
      'Add reference completions, or start from a trained run with --model runs/<run>.',
    );
  const sftLr = (raw.sftLr as number | undefined) ?? (model === 'tiny' ? DEFAULT_SFT_LR_TINY : DEFAULT_SFT_LR_PRETRAINED);

  const epsilon = raw.epsilon as number;
  const epsilonHigh = (raw.epsilonHigh as number | undefined) ?? epsilon;

  const beta = raw.beta as number;
  let refModel: string | null = null;
  if (beta > 0) {
    // The reference is the policy before any update: the --model weights (for 'tiny', its
    // seeded initialisation), never a resumed checkpoint's.
    refModel = raw.refModel === null ? model : modelPath('refModel', raw.refModel as string);
  } else if (raw.refModel !== null && explicit('refModel')) {
    warnings.push(`--ref-model: ignored, --beta is 0 (no KL penalty, no reference policy)`);
  }

  if (loss !== 'lambda')
    for (const key of CONFIG_KEYS)
      if (OPTIONS[key].lambdaOnly && explicit(key))
        warnings.push(`--${OPTIONS[key].flag}: ignored, only used with --loss lambda (loss is ${loss})`);
  if (loss === 'lambda' && raw.lambdaFixed === true && raw.lambdaInit === 0 && explicit('lambdaFixed'))
    warnings.push('--lambda-fixed: with λ fixed at 0 every response weighs the same: this is --loss dapo');

  const steps = raw.steps as number;
  const warmup = raw.warmup as number;
  const evalEvery = raw.evalEvery as number;
  if (warmup > 0 && warmup >= steps)
    warnings.push(`--warmup: ${warmup} warmup steps with --steps ${steps}: the learning rate never reaches its peak`);
  if (raw.keepBest === true && evalEvery === 0 && explicit('keepBest'))
    warnings.push('--keep-best: ignored, --eval-every is 0 (no evaluation picks a best)');
  if (evalEvery > steps)
    warnings.push(`--eval-every: ${evalEvery} is more than --steps ${steps}: no periodic evaluation will run`);

  let resume: string | null = null;
  if (raw.resume !== null) resume = resolve(baseOf('resume'), raw.resume as string);

  let out: string;
  if (raw.out !== undefined) {
    out = resolve(baseOf('out'), raw.out as string);
  } else if (checkpoint) {
    out = checkpoint.runDir;
  } else {
    const taskName = (BUILTIN_TASKS as readonly string[]).includes(task) ? task : basename(task, extname(task));
    out = resolve(cwd, join('runs', `${taskName}-${loss}-${utcStamp(options.now ?? new Date())}`));
  }
  const outStat = statOrUndefined(out);
  if (outStat && !outStat.isDirectory()) fail('out', `${out} exists and is not a directory`);

  if (problems.length) throw new ConfigError(problems);

  const config: TrainConfig = {
    model,
    refModel,
    task,
    reward,
    evalFile,
    evalFraction,
    sftData,
    sftLr,
    chatTemplate: raw.chatTemplate as 'auto' | 'none',
    evalSize,
    loss,
    lambdaInit: raw.lambdaInit as number,
    lambdaR: raw.lambdaR as number,
    lambdaLr: raw.lambdaLr as number,
    lambdaFixed: raw.lambdaFixed as boolean,
    advantage: raw.advantage as AdvantageMode,
    epsilon,
    epsilonHigh,
    beta,
    maskTruncated: raw.maskTruncated as boolean,
    dynamicSampling: raw.dynamicSampling as boolean,
    groupSize,
    promptsPerStep,
    microBatch,
    iterations: raw.iterations as number,
    sftSteps,
    lr: raw.lr as number,
    lrSchedule: raw.lrSchedule as ScheduleKind,
    warmup,
    weightDecay: raw.weightDecay as number,
    maxGradNorm: raw.maxGradNorm as number,
    maxNewTokens: raw.maxNewTokens as number,
    temperature: raw.temperature as number,
    topP: raw.topP as number,
    steps,
    evalEvery,
    saveEvery: raw.saveEvery as number,
    keepCheckpoints: raw.keepCheckpoints as number,
    keepBest: raw.keepBest as boolean,
    out,
    resume,
    seed: raw.seed as number,
    device,
    recompute: raw.recompute as boolean,
    rewardTimeout: raw.rewardTimeout as number,
    restart: raw.restart as boolean,
  };
  return { config, sources, warnings, checkpoint };
}

// ---------------------------------------------------------------------------------------
// JSON form

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/**
 * The config as a JSON object keyed by flag name, in OPTIONS order: what a run directory's
 * config.json holds, and a valid --config file that reproduces the run.
 */
export function configToJson(config: TrainConfig): Record<string, JsonValue> {
  const out: Record<string, JsonValue> = {};
  for (const key of CONFIG_KEYS) {
    const value = config[key];
    out[OPTIONS[key].flag] = key === 'reward' ? (value as RewardSpec[]).map(rewardToString) : ((value ?? null) as JsonValue);
  }
  return out;
}

/** Writes `<dir>/config.json` atomically. */
export function writeRunConfig(dir: string, config: TrainConfig): string {
  const path = join(dir, RUN_CONFIG_FILE);
  writeFileAtomic(path, `${JSON.stringify(configToJson(config), null, 2)}\n`);
  return path;
}

function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (isPlainObject(value))
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(',')}}`;
  return JSON.stringify(value);
}

/**
 * A hash of everything in the config that shapes what the run learns (all but
 * RESUME_MUTABLE_KEYS). A checkpoint records it; a resumed run whose hash differs is
 * continuing a different experiment, which the trainer refuses or warns about.
 */
export function configHash(config: TrainConfig): string {
  const json = configToJson(config);
  for (const key of RESUME_MUTABLE_KEYS) {
    if (key === 'steps' && config.lrSchedule !== 'constant') continue;
    delete json[OPTIONS[key].flag];
  }
  // The path alone let a run resume on an edited JSONL file without a word: the data
  // decides what is learned as much as any option.
  const data = taskDataHash(config.task);
  if (data !== undefined) json['task-data-sha256'] = data;
  return createHash('sha256').update(canonical(json)).digest('hex');
}

/**
 * SHA-256 of a JSONL task file's bytes (undefined for a built-in task), cached by size
 * and mtime. Once read, a file that has since gone keeps its last hash: a checkpoint
 * write must not fail because the data was moved after it was loaded.
 */
export function taskDataHash(task: string): string | undefined {
  if ((BUILTIN_TASKS as readonly string[]).includes(task)) return undefined;
  const last = taskHashes.get(task);
  let stamp: string;
  try {
    const st = statSync(task);
    stamp = `${st.size}:${st.mtimeMs}`;
  } catch (e) {
    if (last) return last.hash;
    throw new Error(`--task: cannot read ${task}: ${(e as Error).message}`, { cause: e });
  }
  if (last?.stamp === stamp) return last.hash;
  const hash = createHash('sha256').update(readFileSync(task)).digest('hex');
  taskHashes.set(task, { stamp, hash });
  return hash;
}
const taskHashes = new Map<string, { stamp: string; hash: string }>();

/** The keys whose values differ between two configs (for a readable resume mismatch). */
export function configDiff(a: TrainConfig, b: TrainConfig): ConfigKey[] {
  const ja = configToJson(a);
  const jb = configToJson(b);
  return CONFIG_KEYS.filter((k) => canonical(ja[OPTIONS[k].flag]) !== canonical(jb[OPTIONS[k].flag]));
}
