// Supervised warm-up: next-token training on reference completions before RL, so a model
// that starts from random weights (the built-in tiny model) already answers some prompts
// and GRPO sees groups with both right and wrong answers from its first step. On `arith`
// the data mixes short ("#### 24") and step-by-step completions, so the warmed-up policy
// writes both forms and RL can discover which is worth its length; on a JSONL task it is
// the "solution"/"completion" field of the training split (never the held-out one), or
// the lines of --sft-data, walked in a fresh seeded order each epoch.
//
// Loss: mean negative log-likelihood over the completion tokens (end-of-sequence token
// included, prompt excluded), one AdamW of its own with a short warmup and cosine decay.
import { AdamW } from '../engine/adamw.js';
import { linearWarmup } from '../engine/schedule.js';
import type { Policy } from '../engine/policy.js';
import { sftExamples, type ArithOptions } from './tasks/arith.js';
import { completionOf, loadJsonl } from './tasks/jsonl.js';
import { hash32, permutation } from './tasks/random.js';
import type { Task } from './tasks/types.js';
import { completionPass } from './token_pass.js';
import type { TextTokenizer } from './tokenizer.js';

// (config.ts's --sft-steps help quotes SFT_BATCH and SFT_LR: keep them in step.)
/** Reference completions per warm-up step. */
export const SFT_BATCH = 32;
/** Peak learning rate of the warm-up by default (a fresh model: high, as for pre-training tiny models). */
export const SFT_LR = 3e-3;

/** One reference completion: the prompt (before any chat template) and the text the model should write. */
export interface WarmupPair {
  prompt: string;
  completion: string;
}

/**
 * The warm-up data a run uses: the lines of sftData when given, else the task's own
 * reference completions (a JSONL task's training split), else null: arith's built-in
 * worked examples. Throws when there is nothing to warm up on.
 */
export function warmupData(config: { task: string; sftData: string | null }, task: Task): WarmupPair[] | null {
  if (config.sftData !== null) {
    return loadJsonl(config.sftData, { requireAnswer: false }).map((e, i) => {
      const completion = completionOf(e);
      if (completion === null) throw new Error(`--sft-data: ${config.sftData}: line ${i + 1} has no "completion" (or "solution") field`);
      return { prompt: e.prompt, completion };
    });
  }
  if (config.task === 'arith') return null;
  const pairs: WarmupPair[] = [];
  for (const e of task.trainSet ?? []) {
    const completion = completionOf(e);
    if (completion !== null) pairs.push({ prompt: e.prompt, completion });
  }
  if (pairs.length === 0) throw new Error(`--sft-steps: ${task.name} has no "solution" (or "completion") field on its training lines; give one or pass --sft-data`);
  return pairs;
}

/** n warm-up pairs: the data walked in a fresh seeded permutation each epoch. */
export function warmupStream(pairs: readonly WarmupPair[], n: number, seed: number): WarmupPair[] {
  const out: WarmupPair[] = [];
  let perm: Uint32Array = new Uint32Array(0);
  for (let i = 0; i < n; i++) {
    const epoch = Math.floor(i / pairs.length);
    if (i % pairs.length === 0) perm = permutation(pairs.length, hash32(seed, 0x5f7_0002, epoch));
    out.push(pairs[perm[i % pairs.length]]);
  }
  return out;
}
/** Linear warmup of that rate, in warm-up steps. */
export const SFT_LR_WARMUP = 20;
/** A metrics line every this many warm-up steps (and after the last). */
export const SFT_LOG_EVERY = 25;
/** Fraction of step-by-step completions in the warm-up data. */
export const SFT_STEP_FRACTION = 0.5;

export interface WarmupRecord {
  sft_step: number;
  loss: number;
  lr: number;
  grad_norm: number;
  time_train: number;
}

export interface WarmupOptions {
  steps: number;
  seed: number;
  batchSize?: number;
  lr?: number;
  task?: ArithOptions;
  /** Reference completions to train on (walked in seeded epochs); default arith's worked examples. */
  data?: readonly WarmupPair[] | null;
  /** Called every SFT_LOG_EVERY steps with the mean loss since the last call. */
  onLog?: (record: WarmupRecord) => void;
  /** Called after every step with the steps done and that step's loss (a progress bar). */
  onStep?: (done: number, loss: number) => void;
  /** Checked between steps; the warm-up stops early when it is aborted. */
  signal?: AbortSignal;
}

export interface WarmupResult {
  steps: number;
  finalLoss: number;
  seconds: number;
  interrupted: boolean;
}

export async function supervisedWarmup(policy: Policy, tokenizer: TextTokenizer, options: WarmupOptions): Promise<WarmupResult> {
  const started = performance.now();
  const batch = options.batchSize ?? SFT_BATCH;
  const examples = options.data
    ? warmupStream(options.data, options.steps * batch, options.seed)
    : sftExamples(options.steps * batch, options.seed, { ...options.task, stepFraction: SFT_STEP_FRACTION });
  const prompts = examples.map((e) => tokenizer.encodePrompt(e.prompt));
  const completions = examples.map((e) => [...tokenizer.encode(e.completion), tokenizer.eosId]);
  const { parameters, gradients } = policy.tensors();  // views on the policy's device
  const optimizer = new AdamW(parameters, gradients, {
    lr: linearWarmup(options.lr ?? SFT_LR, Math.min(SFT_LR_WARMUP, options.steps), options.steps, { schedule: 'cosine' }),
    maxGradNorm: 1,
  });
  let lossSum = 0, lossCount = 0, finalLoss = NaN, windowStart = performance.now();
  let done = 0;
  try {
    for (let s = 0; s < options.steps; s++) {
      // Lets a pending SIGINT handler run between the (synchronous) native passes.
      await new Promise((resolve) => setImmediate(resolve));
      if (options.signal?.aborted) break;
      const lo = s * batch, hi = lo + batch;
      policy.zeroGrad();
      const pass = completionPass(policy, prompts.slice(lo, hi), completions.slice(lo, hi));
      let nll = 0;
      for (let n = 0; n < pass.tokens; n++) nll -= pass.logprobs[n];
      const loss = nll / pass.tokens;
      pass.backward(new Float32Array(pass.tokens).fill(-1 / pass.tokens));
      const result = optimizer.step();
      done = s + 1;
      lossSum += loss;
      lossCount++;
      options.onStep?.(done, loss);
      if (done % SFT_LOG_EVERY === 0 || done === options.steps) {
        finalLoss = lossSum / lossCount;
        const now = performance.now();
        options.onLog?.({ sft_step: done, loss: finalLoss, lr: result.lr, grad_norm: result.gradNorm, time_train: (now - windowStart) / 1000 });
        lossSum = 0;
        lossCount = 0;
        windowStart = now;
      }
    }
  } finally {
    optimizer.dispose();
    policy.zeroGrad();
  }
  return { steps: done, finalLoss, seconds: (performance.now() - started) / 1000, interrupted: done < options.steps };
}
