// The λ-GRPO training loop (the math: docs/lambda-grpo-math.md). One step:
//
//   1. rollout   P prompts from the task's deterministic stream, each sampled G times by
//                the engine (KV cache; temperature, top-p, stop at end-of-sequence), with a
//                seed drawn from the run's serialisable RNG;
//   2. score     every reward term, summed with its weight (a reward that throws counts 0);
//                with --dynamic-sampling, groups whose rewards are all equal are dropped
//                and more prompts sampled to refill the step (bounded, as DAPO/verl do);
//   3. advantage groupAdvantages over the groups (rows of one prompt);
//   4. train     (update.ts) μ = --iterations passes over the batch in micro-batches:
//                forward → fused LM-head log-probs on the completion tokens → grpoLoss
//                with the WHOLE step's weights and normaliser (so the split into
//                micro-batches changes nothing) → backward; after the last micro-batch one
//                AdamW update (clipping, schedule) and one λ update (plain SGD on ∂L/∂λ
//                summed over the micro-batches, unless --lambda-fixed).
//
// Old log-probs: the policy that sampled is the policy before this step's first update,
// so the first pass's log-probs (detached) ARE the old log-probs — TRL does the same
// with one iteration — and later iterations reuse them. Reference log-probs (β > 0) come
// from a frozen copy of the policy at step 0 (after any supervised warm-up), which the run
// directory keeps whenever --model cannot give it back.
//
// Exact resume: every random choice comes from state that a checkpoint holds (the
// sampling RNG, the data cursor; the tiny model's initialisation and the warm-up are
// functions of --seed), weights and optimiser moments are saved bit for bit, and all of
// step N's metric lines are written before checkpoint N. A run resumed from checkpoint N
// therefore writes the same lines as an uninterrupted run, timings aside.
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { AdamW } from '../engine/adamw.js';
import { Policy } from '../engine/policy.js';
import { linearWarmup } from '../engine/schedule.js';
import { groupAdvantages } from '../ops/group_advantages.js';
import { ensureDir } from '../atomic_file.js';
import { recoverDir, writeDirAtomic } from './atomic_dir.js';
import { clearUnfinishedRun, findCheckpoint, removeCheckpointsAfter, writeCheckpoint, type TrainerState } from './checkpoint.js';
import { CONFIG_KEYS, OPTIONS, configHash, configToJson, writeRunConfig, type TrainConfig } from './config.js';
import { METRICS_FILE, MetricsWriter, type MetricRecord } from './metrics.js';
import { checkPromptLengths, checkVocab, decodeCompletion, evaluate, loadModelDir, stopIds, tinyModel, type EvalResult } from './model.js';
import { Progress, type ProgressStream } from './progress.js';
import { writeRunReport } from './report.js';
import { isCorrect } from './rewards/math.js';
import { DEFAULT_REWARD_TIMEOUT_S, resolveReward, scoreAll, type RewardWarning, type WeightedReward } from './rewards/loader.js';
import { Rng } from './rng.js';
import { SFT_LOG_EVERY, supervisedWarmup, warmupData, type WarmupRecord } from './sft.js';
import { arithTask } from './tasks/arith.js';
import { jsonlTask } from './tasks/jsonl.js';
import type { Example, Task } from './tasks/types.js';
import { loadTokenizer, saveTokenizer, type TextTokenizer } from './tokenizer.js';
import { policyUpdate } from './update.js';
import { loadWarmup, saveWarmup, warmupCachePath } from './warmup_cache.js';

// What a program needs to start a run: resolveConfig({...flags}) → train(config).
export { resolveConfig, type TrainConfig } from './config.js';

/** The AdamW state inside a checkpoint. */
export const OPTIMIZER_FILE = 'optimizer.safetensors';
/** The frozen reference policy of a run with β > 0 on the tiny model (its step-0 weights). */
export const REFERENCE_DIR = 'reference';
/** With --keep-best: the weights (and tokenizer) of the best evaluation so far, a model directory. */
export const BEST_DIR = 'best';
/** In BEST_DIR: {step, accuracy} of the evaluation it holds. */
export const BEST_FILE = 'best.json';
/** Eval completions, one file per evaluation. */
export const SAMPLES_DIR = 'samples';
/** Rollout rounds per step at most with --dynamic-sampling (verl's max_num_gen_batches plays this role). */
export const DYNAMIC_SAMPLING_MAX_ROUNDS = 4;
/** Warn about truncation when more than this fraction of a step's responses hit --max-new-tokens. */
const TRUNCATION_WARNING = 0.5;
/** Reward warnings printed per step; the rest are counted. */
const REWARD_WARNINGS_SHOWN = 3;

export interface TrainHooks {
  /** Aborting it stops the run after the current step, which is then checkpointed (Ctrl-C). */
  signal?: AbortSignal;
  /** Where progress and warnings go; default process.stderr; null: silent. */
  progress?: ProgressStream | null;
  /** Put before every progress line (e.g. which run of a comparison, and its ETA). */
  progressLabel?: () => string;
  /** Called once the run is set up (task, rewards, model and data checked), before the warm-up or the first step. */
  onStart?: (out: string) => void;
  /** Called after each training step's metrics are written. */
  onStep?: (step: number) => void;
  /**
   * A folder for supervised warm-ups: one already there for this model, seed and length
   * is loaded instead of computed (the run is the same); one computed is left there.
   */
  warmupCache?: string;
}

export interface EvalSummary {
  step: number;
  accuracy: number;
  meanLength: number;
}

export interface TrainResult {
  out: string;
  /** Steps completed. */
  step: number;
  interrupted: boolean;
  /** λ after the last step. */
  lambda: number;
  /** Evaluations made by this process (step 0 first on a fresh run). */
  evals: EvalSummary[];
  /** The last checkpoint written, if any. */
  checkpoint: string | null;
  /** Wall time of this process's run (warm-up included). */
  seconds: number;
  /** The supervised warm-up; `cached`: loaded from hooks.warmupCache (seconds are those it took then). */
  warmup: { steps: number; seconds: number; finalLoss: number; cached?: boolean } | null;
}

/** The task a config names. */
export function loadTask(config: Pick<TrainConfig, 'task' | 'seed' | 'evalSize'> & Partial<Pick<TrainConfig, 'evalFile' | 'evalFraction'>>): Task {
  if (config.task !== 'arith') return jsonlTask(config.task, { seed: config.seed, evalPath: config.evalFile ?? undefined, evalFraction: config.evalFraction });
  // Said in the terms of the option the user typed, not of the generator's argument.
  const userTerms = (e: unknown): unknown => {
    const m = /only (\d+) distinct evaluation problems found/.exec((e as Error)?.message ?? '');
    return m ? new RangeError(`--eval-size: asked for ${config.evalSize} held-out problems, but the built-in arith task has ${m[1]}; give --eval-size ${m[1]} or less`, { cause: e }) : e;
  };
  let task: Task;
  try {
    task = arithTask({ seed: config.seed, evalSize: config.evalSize });
  } catch (e) {
    throw userTerms(e);
  }
  const evalSet = task.evalSet.bind(task);
  return {
    ...task,
    evalSet(n?: number): Example[] {
      try {
        return evalSet(n);
      } catch (e) {
        throw userTerms(e);
      }
    },
  };
}

/** The reward terms a config names. */
export async function loadRewards(config: Pick<TrainConfig, 'reward'> & Partial<Pick<TrainConfig, 'rewardTimeout'>>): Promise<WeightedReward[]> {
  return Promise.all(config.reward.map((r) => r.kind === 'function'
    ? { name: r.name, fn: r.fn, weight: r.weight, timeoutSeconds: config.rewardTimeout ?? DEFAULT_REWARD_TIMEOUT_S }
    : resolveReward(r.kind === 'builtin' ? r.name : r.path, r.weight, config.rewardTimeout)));
}

interface Rollout {
  examples: Example[];
  prompts: number[][];
  completions: number[][];
  texts: string[];
  stopped: boolean[];
  rewards: Float32Array;
  correct: boolean[];
  components: Record<string, Float64Array>;
  failures: number;
}

interface Sums {
  [key: string]: number;
}

function mean(values: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < values.length; i++) s += values[i];
  return values.length ? s / values.length : NaN;
}

function std(values: ArrayLike<number>): number {
  if (values.length === 0) return NaN;
  const m = mean(values);
  let s = 0;
  for (let i = 0; i < values.length; i++) s += (values[i] - m) ** 2;
  return Math.sqrt(s / values.length);
}

function metricName(rewardName: string): string {
  return `reward_${rewardName.replace(/\.[cm]?js$/, '').replace(/[^A-Za-z0-9_]+/g, '_')}`;
}

/**
 * Whether the run keeps its reference policy in REFERENCE_DIR: whenever the reference is
 * the policy at step 0 and --model cannot give it back, because it is the tiny model (a
 * seed, not a directory) or the warm-up changed the weights the directory holds.
 */
function savesReference(c: TrainConfig): boolean {
  return c.beta > 0 && c.refModel === c.model && (c.model === 'tiny' || c.sftSteps > 0);
}

function samplesFile(step: number): string {
  return `eval-step-${String(step).padStart(6, '0')}.jsonl`;
}

class Trainer {
  readonly config: TrainConfig;
  readonly out: string;
  progress: Progress | null;
  readonly stream: ProgressStream | null;
  readonly signal: AbortSignal | undefined;
  readonly hooks: TrainHooks;
  task!: Task;
  rewards!: WeightedReward[];
  policy!: Policy;
  tokenizer!: TextTokenizer;
  reference: Policy | null = null;
  optimizer!: AdamW;
  metrics!: MetricsWriter;
  sampling!: Rng;
  stops!: number[];
  lambda = 0;
  /** Index of the next training example in the task's stream. */
  cursor = 0;
  step = 0;
  elapsedBefore = 0;
  startedAt = performance.now();
  lastTruncationWarning = -Infinity;
  evals: EvalSummary[] = [];
  lastCheckpoint: string | null = null;
  warmup: TrainResult['warmup'] = null;
  /** The run directory of the checkpoint resumed from. */
  sourceRunDir: string | null = null;
  evalWarned = false;

  constructor(config: TrainConfig, hooks: TrainHooks) {
    this.config = config;
    this.out = config.out;
    this.signal = hooks.signal;
    this.hooks = hooks;
    this.stream = hooks.progress === undefined ? process.stderr : hooks.progress;
    this.progress = this.stream === null ? null : new Progress({ total: config.steps, stream: this.stream, startStep: 0, label: hooks.progressLabel });
  }

  log(message: string): void {
    if (this.progress) this.progress.log(message);
  }

  // -------------------------------------------------------------------------------------
  // Setup

  async setup(): Promise<void> {
    const c = this.config;
    this.task = loadTask(c);
    this.rewards = await loadRewards(c);
    ensureDir(this.out, 'out');  // not mkdirSync({recursive}): it spins forever under /proc
    if (c.resume !== null) await this.resumeFrom(c.resume);
    else await this.fresh(() => this.hooks.onStart?.(this.out));
    this.stops = stopIds(this.policy, this.tokenizer);
    checkPromptLengths(this.task, this.tokenizer, this.policy.config.maxPositionEmbeddings, c.maxNewTokens);
    if (c.beta > 0 && this.reference === null) this.reference = this.loadReference();
  }

  #makeOptimizer(): AdamW {
    const c = this.config;
    // A constant schedule must not depend on --steps, which a resumed run may raise.
    const schedule = c.lrSchedule === 'constant'
      ? linearWarmup(c.lr, c.warmup)
      : linearWarmup(c.lr, Math.min(c.warmup, c.steps), c.steps, { schedule: c.lrSchedule });
    // AdamW counts updates; the schedule counts training steps (each makes μ updates).
    const { parameters, gradients } = this.policy.tensors();  // views on the policy's device
    return new AdamW(parameters, gradients, {
      lr: (update: number) => schedule(Math.ceil(update / c.iterations)),
      weightDecay: c.weightDecay,
      maxGradNorm: c.maxGradNorm,
    });
  }

  async fresh(onReady: () => void = () => {}): Promise<void> {
    const c = this.config;
    // The model, the warm-up data and the prompt lengths are checked before the run
    // directory gets its config and metrics: a bad model directory or an over-long prompt
    // leaves no half-started run that a second try would have to --restart.
    if (c.model === 'tiny') {
      ({ policy: this.policy, tokenizer: this.tokenizer } = tinyModel(c.seed, c.device));
    } else {
      ({ policy: this.policy, tokenizer: this.tokenizer } = loadModelDir(c.model, { device: c.device, chatTemplate: c.chatTemplate }));
    }
    this.policy.recompute = c.recompute;
    const warmupPairs = c.sftSteps > 0 ? warmupData(c, this.task) : null;
    checkPromptLengths(this.task, this.tokenizer, this.policy.config.maxPositionEmbeddings, c.maxNewTokens);
    // Refuses a directory that already holds a run's metrics before anything is written.
    if (c.restart) clearUnfinishedRun(this.out);
    this.metrics = MetricsWriter.open(join(this.out, METRICS_FILE));
    writeRunConfig(this.out, c);
    this.optimizer = this.#makeOptimizer();
    this.sampling = new Rng(c.seed).fork();
    this.lambda = c.loss === 'lambda' ? c.lambdaInit : 0;
    onReady();
    if (c.sftSteps > 0) {
      const cache = this.hooks.warmupCache === undefined ? null : warmupCachePath(this.hooks.warmupCache, c);
      const cached = cache === null ? null : loadWarmup(cache, this.policy);
      if (cached) {
        for (const r of cached.records) this.metrics.write({ kind: 'warmup', step: 0, ...r });
        this.warmup = { steps: cached.steps, seconds: cached.seconds, finalLoss: cached.finalLoss, cached: true };
        this.log(`supervised warm-up: ${c.sftSteps} steps, reused from ${cache}`);
      } else {
        const data = warmupPairs;
        this.log(`supervised warm-up: ${c.sftSteps} steps on ${data === null ? "arith's worked examples" : `${data.length} reference completions`}`);
        const records: WarmupRecord[] = [];
        const bar = this.stream === null ? null
          : new Progress({ total: c.sftSteps, stream: this.stream, label: this.hooks.progressLabel, unit: 'warm-up', every: SFT_LOG_EVERY });
        const result = await supervisedWarmup(this.policy, this.tokenizer, {
          steps: c.sftSteps,
          seed: c.seed,
          data,
          lr: c.sftLr,
          onStep: (done, loss) => bar?.update(done, { loss }),
          signal: this.signal,
          onLog: (r) => {
            records.push(r);
            this.metrics.write({ kind: 'warmup', step: 0, ...r });
          },
        });
        bar?.done();
        this.warmup = { steps: result.steps, seconds: result.seconds, finalLoss: result.finalLoss };
        if (result.interrupted) return;
        if (cache !== null) saveWarmup(cache, this.policy, { records, ...this.warmup });
        this.log(`supervised warm-up done in ${result.seconds.toFixed(1)} s, loss ${result.finalLoss.toFixed(4)}`);
      }
    }
    if (c.beta > 0 && c.refModel === c.model) {
      // The reference is this policy now, at step 0; saved, so a resumed run gets it back.
      this.reference = this.#copyPolicy();
      if (savesReference(c))
        writeDirAtomic(join(this.out, REFERENCE_DIR), (tmp) => {
          this.policy.save(tmp);
          saveTokenizer(this.tokenizer, tmp);
        });
    }
  }

  #copyPolicy(): Policy {
    return this.policy.to(this.policy.device);
  }

  loadReference(): Policy {
    const c = this.config;
    let dir: string;
    if (c.refModel === 'tiny' && c.model !== 'tiny') throw new Error("--ref-model: 'tiny' is only a reference for --model tiny");
    if (savesReference(c)) {
      dir = join(this.out, REFERENCE_DIR);
      const source = join(this.sourceRunDir ?? this.out, REFERENCE_DIR);
      recoverDir(source);
      if (source !== dir) recoverDir(dir);
      // Resumed into another directory: the reference comes along, for later resumes too.
      if (!existsSync(dir) && existsSync(source)) writeDirAtomic(dir, (tmp) => cpSync(source, tmp, { recursive: true }));
      if (!existsSync(dir)) throw new Error(`--resume: the run's reference policy ${dir} is missing (it is written at step 0 when --beta > 0)`);
    } else {
      dir = c.refModel!;
    }
    const { policy, tokenizer } = loadModelDir(dir);
    if (policy.config.vocabSize !== this.policy.config.vocabSize)
      throw new Error(`--ref-model: ${dir} has vocab_size ${policy.config.vocabSize}, the policy ${this.policy.config.vocabSize}`);
    checkVocab(policy, tokenizer, dir);
    return policy;
  }

  async resumeFrom(path: string): Promise<void> {
    const c = this.config;
    const found = findCheckpoint(path);
    if (found.note) this.log(`resume: ${found.note}`);
    const state = found.state;
    this.sourceRunDir = found.runDir;
    if (state.configHash !== configHash(c)) {
      const saved = state.config ?? {};
      const now = configToJson(c);
      // --steps is part of the hash only under a decaying schedule (configHash), so it is named only then.
      const decays = c.lrSchedule !== 'constant';
      const differ = CONFIG_KEYS.map((k) => OPTIONS[k].flag)
        .filter((f) => JSON.stringify(saved[f]) !== JSON.stringify(now[f]) && !['out', 'resume', 'device', 'recompute', 'eval-every', 'save-every', 'keep-checkpoints'].includes(f))
        .filter((f) => f !== 'steps' || decays);
      if (differ.length === 1 && differ[0] === 'steps')
        throw new Error(
          `--resume: ${found.dir} was trained for --steps ${saved.steps} with --lr-schedule ${c.lrSchedule}, which decays the learning rate to 0 at --steps; ` +
          `--steps ${c.steps} would change the rates of the steps already taken. Resume with --steps ${saved.steps}, or start a new run with --model pointing at the checkpoint.`,
        );
      throw new Error(
        `--resume: ${found.dir} was trained with a different configuration (${differ.length ? differ.map((f) => `--${f}`).join(', ') : c.task !== 'arith' ? `the contents of --task ${c.task} changed since` : 'see its config'}); ` +
        'resuming would not continue the same run. Start a new run with --model pointing at the checkpoint instead.',
      );
    }
    if (state.step >= c.steps) throw new Error(`--steps: the checkpoint is at step ${state.step}; pass a larger --steps to train further`);

    // A run resumed into another directory carries its history along.
    const metricsPath = join(this.out, METRICS_FILE);
    const sourceMetrics = join(found.runDir, METRICS_FILE);
    if (resolve(found.runDir) !== resolve(this.out) && !existsSync(metricsPath) && existsSync(sourceMetrics)) copyFileSync(sourceMetrics, metricsPath);
    removeCheckpointsAfter(this.out, state.step);
    this.metrics = MetricsWriter.open(metricsPath, { resumeStep: state.step });
    const samplesDir = join(this.out, SAMPLES_DIR);
    if (existsSync(samplesDir))
      for (const name of readdirSync(samplesDir)) {
        const m = /^eval-step-(\d+)\.jsonl$/.exec(name);
        if (m && Number(m[1]) > state.step) rmSync(join(samplesDir, name), { force: true });
      }
    writeRunConfig(this.out, c);

    this.tokenizer = loadTokenizer(found.dir, { useChatTemplate: c.chatTemplate !== 'none' });
    this.policy = Policy.fromPretrained(found.dir, { device: c.device, recompute: c.recompute });
    checkVocab(this.policy, this.tokenizer, found.dir);
    this.optimizer = this.#makeOptimizer();
    this.optimizer.loadStateFile(join(found.dir, OPTIMIZER_FILE));
    if (!state.rng.sampling) throw new Error(`--resume: ${found.dir}: trainer_state.json has no sampling RNG state`);
    this.sampling = Rng.fromState(state.rng.sampling, 'rng.sampling');
    this.lambda = state.lambda;
    const size = this.task.trainSize;
    this.cursor = size === null ? state.dataCursor.offset : state.dataCursor.epoch * size + state.dataCursor.offset;
    this.step = state.step;
    this.elapsedBefore = state.elapsedSeconds ?? 0;
    this.hooks.onStart?.(this.out);
    this.log(`resumed from ${found.dir} (step ${state.step})`);
  }

  // -------------------------------------------------------------------------------------
  // Rollout and scoring

  nextExamples(n: number): Example[] {
    const out: Example[] = [];
    for (let i = 0; i < n; i++) out.push(this.task.trainExample(this.cursor++));
    return out;
  }

  async rollout(n: number, timing: Sums, warnings: RewardWarning[]): Promise<Rollout> {
    const c = this.config;
    const G = c.groupSize;
    const examples = this.nextExamples(n);
    const encoded = examples.map((e) => this.tokenizer.encodePrompt(e.prompt));
    const rowExamples: Example[] = [];
    const prompts: number[][] = [];
    for (let g = 0; g < n; g++)
      for (let k = 0; k < G; k++) {
        rowExamples.push(examples[g]);
        prompts.push(encoded[g]);
      }
    let t = performance.now();
    const gen = this.policy.generate(prompts, {
      maxNewTokens: c.maxNewTokens,
      temperature: c.temperature,
      topP: c.topP,
      seed: this.sampling.nextUint32(),
      stopIds: this.stops,
    });
    timing.rollout += (performance.now() - t) / 1000;
    t = performance.now();
    const texts = gen.tokens.map((tokens) => decodeCompletion(this.tokenizer, tokens, this.stops));
    const scored = await scoreAll(this.rewards, rowExamples, texts, { onWarning: (w) => warnings.push(w) });
    const correct = texts.map((text, i) => isCorrect(text, rowExamples[i].answer));
    timing.score += (performance.now() - t) / 1000;
    return {
      examples: rowExamples, prompts, completions: gen.tokens, texts, stopped: gen.stopped,
      rewards: Float32Array.from(scored.total), correct, components: scored.components, failures: scored.failures,
    };
  }

  /** Per group of G rows: are all its rewards equal (no learning signal)? */
  degenerateGroups(r: Rollout): boolean[] {
    const G = this.config.groupSize;
    const flags: boolean[] = [];
    for (let g = 0; g * G < r.rewards.length; g++) {
      const first = r.rewards[g * G];
      let same = true;
      for (let k = 1; k < G; k++) if (r.rewards[g * G + k] !== first) same = false;
      flags.push(same);
    }
    return flags;
  }

  // -------------------------------------------------------------------------------------
  // One step

  async trainStep(): Promise<MetricRecord> {
    const c = this.config;
    const G = c.groupSize;
    const P = c.promptsPerStep;
    const timing: Sums = { rollout: 0, score: 0, train: 0 };
    const warnings: RewardWarning[] = [];

    // Rollout (and, with dynamic sampling, refills). Every sampled row counts towards the
    // reward/accuracy/length metrics; the trained batch is the kept groups.
    const sampled: Rollout[] = [];
    const kept: Array<{ r: Rollout; group: number }> = [];
    let groupsSampled = 0, groupsDegenerate = 0;
    for (let round = 0; ; round++) {
      const r = await this.rollout(round === 0 ? P : P - kept.length, timing, warnings);
      sampled.push(r);
      const degenerate = this.degenerateGroups(r);
      groupsSampled += degenerate.length;
      groupsDegenerate += degenerate.filter(Boolean).length;
      degenerate.forEach((d, g) => {
        if (!c.dynamicSampling || !d) kept.push({ r, group: g });
      });
      if (!c.dynamicSampling || kept.length >= P || round + 1 >= DYNAMIC_SAMPLING_MAX_ROUNDS) break;
    }
    if (kept.length === 0) {
      // Nothing informative within the bound: train on the last round as sampled (its
      // advantages are 0; a KL term still acts), as a run without filtering would.
      const last = sampled[sampled.length - 1];
      for (let g = 0; g * G < last.rewards.length; g++) kept.push({ r: last, group: g });
    }

    // The trained batch, groups in order.
    const prompts: number[][] = [], completions: number[][] = [], stopped: boolean[] = [];
    const rewardsList: number[] = [], groupIds: number[] = [];
    kept.forEach(({ r, group }, gi) => {
      for (let k = 0; k < G; k++) {
        const i = group * G + k;
        prompts.push(r.prompts[i]);
        completions.push(r.completions[i]);
        stopped.push(r.stopped[i]);
        rewardsList.push(r.rewards[i]);
        groupIds.push(gi);
      }
    });
    const groups = kept.length;
    const ids = Int32Array.from(groupIds);
    const rewards = Float32Array.from(rewardsList);
    const adv = groupAdvantages(rewards, ids, { mode: c.advantage, groups }).advantages as Float32Array;
    const t = performance.now();
    let ref: Float32Array[] | null = null;
    if (c.beta > 0) ref = this.reference!.sequenceLogprobs(prompts, completions, { temperature: c.temperature });
    const u = policyUpdate(this.policy, this.optimizer, this.lambda, { prompts, completions, stopped, advantages: adv, groupIds: ids, groups, ref }, c,
      (message) => this.log(`warning: step ${this.step + 1}: ${message}`));
    this.lambda = u.lambda;
    timing.train += (performance.now() - t) / 1000;

    // Metrics over everything sampled this step.
    const all = { rewards: [] as number[], lengths: [] as number[], correct: [] as boolean[], truncated: 0, failures: 0 };
    const components: Record<string, number[]> = {};
    for (const r of sampled) {
      r.rewards.forEach((x) => all.rewards.push(x));
      r.completions.forEach((comp) => all.lengths.push(comp.length));
      r.correct.forEach((x) => all.correct.push(x));
      all.truncated += r.stopped.filter((s) => !s).length;
      all.failures += r.failures;
      for (const [name, values] of Object.entries(r.components)) (components[name] ??= []).push(...values);
    }
    const n = all.rewards.length;
    const lenCorrect = all.lengths.filter((_, i) => all.correct[i]);
    const lenWrong = all.lengths.filter((_, i) => !all.correct[i]);
    const absAdv = Array.from(adv, Math.abs);
    const record: MetricRecord = {
      kind: 'train',
      step: this.step + 1,
      loss: u.lossSum / c.iterations,
      reward_mean: mean(all.rewards),
      reward_std: std(all.rewards),
      accuracy: all.correct.filter(Boolean).length / n,
      advantage_mean: mean(adv),
      advantage_std: std(adv),
      advantage_abs_mean: mean(absAdv),
      clip_frac_low: u.tokens ? u.clipLow / u.tokens : 0,
      clip_frac_high: u.tokens ? u.clipHigh / u.tokens : 0,
      ratio_mean: u.tokens ? u.ratio / u.tokens : 1,
    };
    if (c.beta > 0) record.kl = u.tokens ? u.kl / u.tokens : 0;
    if (u.entropyTokens > 0) record.entropy = u.entropySum / u.entropyTokens;
    record.mean_length = mean(all.lengths);
    if (lenCorrect.length) record.length_correct = mean(lenCorrect);
    if (lenWrong.length) record.length_wrong = mean(lenWrong);
    record.truncated_frac = all.truncated / n;
    record.degenerate_frac = groupsDegenerate / groupsSampled;
    if (c.dynamicSampling) {
      record.groups_sampled = groupsSampled;
      record.groups_trained = groups;
    }
    if (c.loss === 'lambda') {
      record.lambda = this.lambda;
      record.lambda_grad = u.gradLambda.reduce((x, y) => x + y, 0) / c.iterations;
    }
    if (u.weightMin <= u.weightMax) {
      record.weight_min = u.weightMin;
      record.weight_max = u.weightMax;
    }
    if (u.lastUpdate) {
      record.lr = u.lastUpdate.lr;
      record.grad_norm = u.lastUpdate.gradNorm;
    }
    if (u.skipped) record.skipped_updates = u.skipped;
    if (this.rewards.length > 1) for (const [name, values] of Object.entries(components)) record[metricName(name)] = mean(values);
    record.reward_failures = all.failures;
    record.time_rollout = timing.rollout;
    record.time_score = timing.score;
    record.time_train = timing.train;

    if (warnings.length) {
      for (const w of warnings.slice(0, REWARD_WARNINGS_SHOWN)) this.log(`warning: step ${this.step + 1}: ${w.message}`);
      if (warnings.length > REWARD_WARNINGS_SHOWN) this.log(`warning: step ${this.step + 1}: … and ${warnings.length - REWARD_WARNINGS_SHOWN} more reward failures (counted as 0)`);
    }
    if (record.truncated_frac > TRUNCATION_WARNING && this.step - this.lastTruncationWarning >= 20) {
      this.lastTruncationWarning = this.step;
      this.log(`warning: step ${this.step + 1}: ${(100 * record.truncated_frac).toFixed(0)}% of responses hit --max-new-tokens ${c.maxNewTokens} without an end token${c.maskTruncated ? ' (masked out of the loss)' : '; consider raising it or --mask-truncated'}`);
    }
    return record;
  }

  // -------------------------------------------------------------------------------------
  // Evaluation, checkpoints

  async runEval(): Promise<EvalResult | null> {
    const c = this.config;
    const warnings: RewardWarning[] = [];
    const examples = this.task.evalSet(c.evalSize);
    if (examples.length === 0) {
      if (!this.evalWarned) this.log(`warning: ${c.task} has no held-out examples: no evaluation`);
      this.evalWarned = true;
      return null;
    }
    const result = await evaluate(this.policy, this.tokenizer, examples, this.rewards, {
      maxNewTokens: c.maxNewTokens,
      onWarning: (w) => warnings.push(w),
    });
    if (warnings.length) this.log(`warning: eval @ step ${this.step}: ${warnings.length} reward failures (counted as 0), e.g. ${warnings[0].message}`);
    this.metrics.write({
      kind: 'eval', step: this.step, accuracy: result.accuracy, mean_length: result.meanLength, reward_mean: result.rewardMean,
      truncated_frac: result.truncatedFrac, time_eval: result.seconds,
    });
    const dir = join(this.out, SAMPLES_DIR);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, samplesFile(this.step)), result.samples.map((s) => JSON.stringify(s)).join('\n') + '\n');
    this.evals.push({ step: this.step, accuracy: result.accuracy, meanLength: result.meanLength });
    if (c.keepBest) this.keepBest(result.accuracy);
    this.progress?.eval(this.step, { accuracy: result.accuracy, meanLength: result.meanLength, reward: result.rewardMean });
    writeRunReport(this.out);
    return result;
  }

  /** Accuracy of the evaluation BEST_DIR holds (undefined: not read yet; -Infinity: none). */
  bestAccuracy: number | undefined;

  /** Replaces BEST_DIR when this evaluation beats every earlier one (step 0 counts). */
  keepBest(accuracy: number): void {
    const dir = join(this.out, BEST_DIR);
    if (this.bestAccuracy === undefined) {
      // A resumed run continues the best of the steps it keeps; a best from steps after the
      // checkpoint it resumed from is replayed, and rewritten, by the same evaluations.
      this.bestAccuracy = -Infinity;
      try {
        recoverDir(dir);
        const saved = JSON.parse(readFileSync(join(dir, BEST_FILE), 'utf8')) as { step?: unknown; accuracy?: unknown };
        if (typeof saved.accuracy === 'number' && typeof saved.step === 'number' && saved.step < this.step) this.bestAccuracy = saved.accuracy;
      } catch {
        // none yet
      }
    }
    if (!(accuracy > this.bestAccuracy)) return;
    this.bestAccuracy = accuracy;
    writeDirAtomic(dir, (tmp) => {
      this.policy.save(tmp);
      saveTokenizer(this.tokenizer, tmp);
      writeFileSync(join(tmp, BEST_FILE), `${JSON.stringify({ step: this.step, accuracy })}\n`);
    });
    this.log(`best evaluation so far (accuracy ${accuracy.toFixed(3)} at step ${this.step}): weights in ${dir}`);
  }

  state(): TrainerState {
    const size = this.task.trainSize;
    return {
      step: this.step,
      lambda: this.lambda,
      lambdaOptimizer: { kind: 'sgd', state: {} },
      rng: { sampling: this.sampling.getState() },
      dataCursor: size === null ? { epoch: 0, offset: this.cursor } : { epoch: Math.floor(this.cursor / size), offset: this.cursor % size },
      configHash: configHash(this.config),
      config: configToJson(this.config),
      elapsedSeconds: this.elapsedBefore + (performance.now() - this.startedAt) / 1000,
    };
  }

  async save(): Promise<string> {
    const path = await writeCheckpoint(this.out, this.step, (tmp) => {
      this.policy.save(tmp);
      saveTokenizer(this.tokenizer, tmp);
      this.optimizer.saveState(join(tmp, OPTIMIZER_FILE));
    }, { state: this.state(), keepLast: this.config.keepCheckpoints });
    this.lastCheckpoint = path;
    return path;
  }

  // -------------------------------------------------------------------------------------
  // The loop

  async run(): Promise<TrainResult> {
    const c = this.config;
    let interrupted = false;
    try {
      await this.setup();
      const resumed = c.resume !== null;
      if (!resumed && this.signal?.aborted) {
        if (this.warmup !== null && this.warmup.steps < c.sftSteps) {
          // Part of a warm-up is no state a run can continue from exactly.
          this.log('interrupted during the supervised warm-up; nothing was saved');
        } else {
          await this.save();
          this.log(`interrupted: saved ${this.lastCheckpoint}; continue with --resume ${this.out}`);
        }
        return this.result(true);
      }
      // (A run resumed from checkpoint-0 was stopped right after its warm-up, before this eval.)
      if ((!resumed || this.step === 0) && c.evalEvery > 0) await this.runEval();
      if (this.stream !== null) this.progress = new Progress({ total: c.steps, stream: this.stream, startStep: this.step, label: this.hooks.progressLabel });
      while (this.step < c.steps) {
        const record = await this.trainStep();
        this.step++;
        this.metrics.write(record);
        this.hooks.onStep?.(this.step);
        this.progress?.update(this.step, {
          reward: record.reward_mean as number, accuracy: record.accuracy as number, meanLength: record.mean_length as number,
          lambda: record.lambda as number | undefined,
        });
        const last = this.step === c.steps;
        if (c.evalEvery > 0 && (this.step % c.evalEvery === 0 || last)) await this.runEval();
        // Lets a pending SIGINT handler run before deciding whether to stop.
        await new Promise((r) => setImmediate(r));
        interrupted = this.signal?.aborted === true && !last;
        if (last || interrupted || (c.saveEvery > 0 && this.step % c.saveEvery === 0)) await this.save();
        if (interrupted) {
          this.log(`interrupted: saved ${this.lastCheckpoint}; continue with --resume ${this.out}`);
          break;
        }
      }
      writeRunReport(this.out);
      return this.result(interrupted);
    } finally {
      this.progress?.done();
      this.metrics?.close();
      this.policy?.dispose();
      this.reference?.dispose();
      this.optimizer?.dispose();
    }
  }

  result(interrupted: boolean): TrainResult {
    return {
      out: this.out,
      step: this.step,
      interrupted,
      lambda: this.lambda,
      evals: this.evals,
      checkpoint: this.lastCheckpoint,
      seconds: (performance.now() - this.startedAt) / 1000,
      warmup: this.warmup,
    };
  }
}

/**
 * Runs (or resumes, with config.resume) a training run as the config says, writing the
 * run directory config.out. Resolves when the run ends or, after hooks.signal aborts, once
 * the current step is checkpointed.
 */
export async function train(config: TrainConfig, hooks: TrainHooks = {}): Promise<TrainResult> {
  return new Trainer(config, hooks).run();
}
