// Reward functions from users and the built-ins, and scoring a batch with all of them.
// A reward that throws or returns something that is not a finite number must not end a long
// run: scoreAll counts it as 0 and reports it (with the example) through onWarning.
import { existsSync, statSync } from 'node:fs';
import { extname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Example } from '../tasks/types.js';
import { mathReward } from './math.js';
import { formatReward } from './format.js';

export type RewardFn = (example: Example, completion: string) => number | Promise<number>;

export interface WeightedReward {
  /** Names the reward in warnings and per-reward metrics. */
  name: string;
  fn: RewardFn;
  weight: number;
  /**
   * Seconds one call may take to settle before it counts as a failure (0: no limit;
   * default DEFAULT_REWARD_TIMEOUT_S). A promise that never settles once stalled training
   * forever, with Ctrl-C waiting on the step.
   */
  timeoutSeconds?: number;
}

export const DEFAULT_REWARD_TIMEOUT_S = 60;
// Rewards are trained on as f32: a finite JS number beyond this (1e39) is Infinity there.
const F32_MAX = 3.4028234663852886e38;

export const BUILTIN_REWARDS: Readonly<Record<string, RewardFn>> = Object.freeze({
  math: mathReward,
  format: formatReward,
});

const TS_EXTENSIONS = new Set(['.ts', '.mts', '.cts', '.tsx']);
const JS_EXTENSIONS = new Set(['.js', '.mjs', '.cjs']);

/**
 * Imports a reward module and returns its reward function: the default export, or a named
 * export `reward` (for CommonJS, `module.exports = fn` or `exports.reward = fn`).
 */
export async function loadRewardModule(path: string): Promise<RewardFn> {
  const absolute = resolve(path);
  const ext = extname(absolute).toLowerCase();
  if (TS_EXTENSIONS.has(ext)) {
    throw new Error(
      `reward module ${absolute}: Node 20 cannot import TypeScript; compile it to JavaScript first ` +
      `(e.g. npx tsc --module nodenext --target es2022 ${path}) and pass the .js file`,
    );
  }
  if (!JS_EXTENSIONS.has(ext)) {
    throw new Error(`reward module ${absolute}: expected a .js, .mjs or .cjs file, got "${ext || 'no extension'}"`);
  }
  if (!existsSync(absolute) || !statSync(absolute).isFile()) {
    throw new Error(`reward module ${absolute}: file not found`);
  }
  let mod: Record<string, unknown>;
  try {
    mod = await import(pathToFileURL(absolute).href) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`reward module ${absolute}: failed to import: ${(err as Error)?.message ?? String(err)}`, { cause: err });
  }
  const candidates: unknown[] = [mod.default, mod.reward];
  // CommonJS `exports.reward = fn` arrives as default = { reward: fn } when the lexer misses it.
  const def = mod.default;
  if (def !== null && typeof def === 'object') candidates.push((def as Record<string, unknown>).reward);
  const fn = candidates.find((c) => typeof c === 'function');
  if (fn === undefined) {
    const names = Object.keys(mod).filter((k) => k !== '__esModule');
    throw new TypeError(
      `reward module ${absolute}: expected a function as the default export or as an export named "reward"; ` +
      `found ${names.length ? names.map((n) => `${n} (${describe(mod[n])})`).join(', ') : 'no exports'}`,
    );
  }
  return fn as RewardFn;
}

/**
 * A reward by name: a built-in ("math", "format") or a path to a module. The name used in
 * warnings and metrics is the built-in's name or the file name.
 */
export async function resolveReward(source: string, weight = 1, timeoutSeconds = DEFAULT_REWARD_TIMEOUT_S): Promise<WeightedReward> {
  if (!Number.isFinite(weight)) throw new RangeError(`weight: expected a finite number for reward "${source}", got ${weight}`);
  if (!(timeoutSeconds >= 0)) throw new RangeError(`timeoutSeconds: expected a number >= 0 for reward "${source}", got ${timeoutSeconds}`);
  const builtin = Object.hasOwn(BUILTIN_REWARDS, source) ? BUILTIN_REWARDS[source] : undefined;
  if (builtin !== undefined) return { name: source, fn: builtin, weight, timeoutSeconds };
  if (!/[\\/.]/.test(source)) {
    throw new Error(`reward "${source}": not a built-in reward (${Object.keys(BUILTIN_REWARDS).join(', ')}) nor a path to a .js module`);
  }
  const fn = await loadRewardModule(source);
  return { name: source.split(/[\\/]/).pop() ?? source, fn, weight, timeoutSeconds };
}

export interface RewardWarning {
  reward: string;
  /** Index of the completion in the batch. */
  index: number;
  example: Example;
  completion: string;
  /** Set when the reward threw or rejected. */
  error?: unknown;
  /** Set when the reward returned a value that is not a finite number. */
  value?: unknown;
  message: string;
}

class RewardTimeout extends Error {
  constructor(seconds: number) {
    super(`did not settle within ${seconds} s (--reward-timeout)`);
    this.name = 'RewardTimeout';
  }
}

export interface ScoreOptions {
  onWarning?: (warning: RewardWarning) => void;
}

export interface ScoreResult {
  /** Weighted sum over the reward functions, one per completion. */
  total: Float64Array;
  /** Each reward function's raw (unweighted) values, by reward name, invalid ones as 0. */
  components: Record<string, Float64Array>;
  /** How many (reward, completion) pairs were counted as 0 because they failed. */
  failures: number;
}

function describe(value: unknown): string {
  if (typeof value === 'string') return `a string ${JSON.stringify(value.length > 40 ? value.slice(0, 40) + '…' : value)}`;
  if (typeof value === 'number') return String(value);
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : typeof value;
}

function shorten(s: string, max = 80): string {
  return JSON.stringify(s.length > max ? s.slice(0, max) + '…' : s);
}

/** Accepts a list of WeightedReward, or bare functions (weight 1, named reward0, reward1…). */
function normalise(rewards: ReadonlyArray<WeightedReward | RewardFn>): WeightedReward[] {
  const names = new Set<string>();
  return rewards.map((r, i) => {
    const w: WeightedReward = typeof r === 'function' ? { name: `reward${i}`, fn: r, weight: 1 } : r;
    if (typeof w.fn !== 'function') throw new TypeError(`rewardFns[${i}]: expected a function`);
    if (!Number.isFinite(w.weight)) throw new RangeError(`rewardFns[${i}] (${w.name}): weight must be finite, got ${w.weight}`);
    // Two rewards of the same name would overwrite each other's metrics: number the repeats.
    let name = w.name;
    for (let k = 2; names.has(name); k++) name = `${w.name}#${k}`;
    names.add(name);
    return { ...w, name };
  });
}

/**
 * Scores completions[i] against examples[i] with every reward and sums them with their
 * weights. Every call of one reward runs concurrently (async rewards may do I/O); results and
 * warnings are in batch order whatever order the promises settle in.
 */
export async function scoreAll(
  rewardFns: ReadonlyArray<WeightedReward | RewardFn>,
  examples: ReadonlyArray<Example>,
  completions: ReadonlyArray<string>,
  options: ScoreOptions = {},
): Promise<ScoreResult> {
  if (examples.length !== completions.length) {
    throw new RangeError(`completions: expected one per example (${examples.length}), got ${completions.length}`);
  }
  const rewards = normalise(rewardFns);
  if (rewards.length === 0) throw new RangeError('rewardFns: expected at least one reward function');
  const n = completions.length;
  const total = new Float64Array(n);
  const components: Record<string, Float64Array> = {};
  let failures = 0;
  for (const reward of rewards) {
    const values = new Float64Array(n);
    const limit = reward.timeoutSeconds ?? DEFAULT_REWARD_TIMEOUT_S;
    const timers: ReturnType<typeof setTimeout>[] = [];
    const settled = await Promise.allSettled(
      completions.map((completion, i) => {
        try {
          const value = reward.fn(examples[i], completion);
          if (limit === 0 || !(value instanceof Promise || (typeof value === 'object' && value !== null && 'then' in value)))
            return Promise.resolve(value);
          return Promise.race([Promise.resolve(value), new Promise<never>((_, reject) => {
            timers.push(setTimeout(() => reject(new RewardTimeout(limit)), limit * 1000));
          })]);
        } catch (err) {
          return Promise.reject(err);
        }
      }),
    );
    for (const t of timers) clearTimeout(t);
    for (let i = 0; i < n; i++) {
      const s = settled[i];
      let warning: Omit<RewardWarning, 'message'> | null = null;
      let detail = '';
      if (s.status === 'rejected') {
        warning = { reward: reward.name, index: i, example: examples[i], completion: completions[i], error: s.reason };
        detail = s.reason instanceof RewardTimeout
          ? s.reason.message
          : `threw ${s.reason instanceof Error ? `${s.reason.name}: ${s.reason.message}` : describe(s.reason)}`;
      } else if (typeof s.value !== 'number' || !Number.isFinite(s.value)) {
        warning = { reward: reward.name, index: i, example: examples[i], completion: completions[i], value: s.value };
        detail = `returned ${describe(s.value)} instead of a finite number`;
      } else if (Math.abs(s.value) > F32_MAX) {
        warning = { reward: reward.name, index: i, example: examples[i], completion: completions[i], value: s.value };
        detail = `returned ${s.value}, beyond float32's range (±3.4e38) that rewards are trained in`;
      } else {
        values[i] = s.value;
        continue;
      }
      failures++;
      options.onWarning?.({
        ...warning,
        message: `reward "${reward.name}" ${detail} for completion ${i} of example ${shorten(String(examples[i]?.prompt ?? ''))}; counted as 0`,
      });
    }
    for (let i = 0; i < n; i++) total[i] += reward.weight * values[i];
    components[reward.name] = values;
  }
  // Each value fits float32, but weights above 1 or several terms can carry the sum past
  // it, and training would then see ±Infinity: a configuration error, said as such.
  for (let i = 0; i < n; i++)
    if (Math.abs(total[i]) > F32_MAX)
      throw new RangeError(`rewards: the weighted sum for completion ${i} of example ${shorten(String(examples[i]?.prompt ?? ''))} is ` +
        `${total[i]}, beyond float32's range (±3.4e38) that rewards are trained in (terms: ` +
        `${rewards.map((r) => `${r.name}=${r.weight} × ${components[r.name][i]}`).join(', ')}); lower the weights or scale the rewards down`);
  return { total, components, failures };
}
