// The built-in task: sums of 2–4 small numbers, sized for a char-level policy of a few hundred
// thousand parameters that trains on a CPU in minutes.
//
//   prompt                 "12+7+5=? (#### n)\n"        (states the answer format; ≤ 23 chars)
//   short completion       "#### 24"
//   step-by-step           "12+7=19,19+5=24\n#### 24"
//
// Why this shape: a tiny model finds adding three or four numbers in one go hard, but each
// written step is a single two-number sum plus copying, which it learns quickly. So the long
// form is the more accurate one, correct and wrong responses differ in length, and the RL
// phase has something to discover (prefer writing the steps) — the situation λ-GRPO's learnable
// length preference is about. The answer line "#### N" is what the math reward reads.
//
// Splits: a problem is held out iff a salted hash of its expression falls below evalFraction.
// The partition does not depend on any seed, so the training stream of every seed avoids
// every evaluation problem, and the evaluation set is the same for every run.
import type { Example, Task } from './types.js';
import { checkCount, checkSeed, hash32, mulberry32, randInt, stringHash32 } from './random.js';

export interface ArithOptions {
  /** Fewest numbers in a sum (default 2). */
  minTerms?: number;
  /** Most numbers in a sum (default 4). */
  maxTerms?: number;
  /** Smallest operand (default 1). */
  minOperand?: number;
  /** Largest operand (default 19). */
  maxOperand?: number;
  /** Fraction of all problems held out for evaluation (default 0.1). */
  evalFraction?: number;
}

export type ResolvedArithOptions = Required<ArithOptions>;

export const ARITH_DEFAULTS: Readonly<ResolvedArithOptions> = Object.freeze({
  minTerms: 2,
  maxTerms: 4,
  minOperand: 1,
  maxOperand: 19,
  evalFraction: 0.1,
});

/** The prefix of the answer line, as the prompt asks for it. */
export const ANSWER_PREFIX = '#### ';
const PROMPT_SUFFIX = '=? (#### n)\n';

/** Every character a prompt or reference completion can contain. */
export const ARITH_ALPHABET = '0123456789+=?,#n() \n';

export interface ArithProblem extends Example {
  terms: number[];
  total: number;
}

export type CompletionForm = 'short' | 'steps';

export interface SftExample extends ArithProblem {
  /** A correct reference completion (no end-of-sequence token: the trainer appends it). */
  completion: string;
  form: CompletionForm;
}

// Fixed salts: changing them would silently change every split and evaluation set.
const EVAL_SALT = 0x5eed_e7a1;
const SFT_SALT = 0x5f7_0001;
const EVAL_SET_SALT = 0xe7a1_5e75;
const MAX_DRAWS = 100_000;

export function resolveArithOptions(options: ArithOptions = {}): ResolvedArithOptions {
  const o = { ...ARITH_DEFAULTS, ...options } as ResolvedArithOptions;
  for (const key of ['minTerms', 'maxTerms', 'minOperand', 'maxOperand'] as const) {
    if (!Number.isSafeInteger(o[key]) || o[key] < 0) throw new RangeError(`${key}: expected a non-negative integer, got ${o[key]}`);
  }
  if (o.minTerms < 2 || o.maxTerms < o.minTerms || o.maxTerms > 8) {
    throw new RangeError(`minTerms/maxTerms: expected 2 ≤ minTerms ≤ maxTerms ≤ 8, got ${o.minTerms} and ${o.maxTerms}`);
  }
  if (o.maxOperand < o.minOperand || o.maxOperand > 999) {
    throw new RangeError(`minOperand/maxOperand: expected 0 ≤ minOperand ≤ maxOperand ≤ 999, got ${o.minOperand} and ${o.maxOperand}`);
  }
  if (!(o.evalFraction > 0 && o.evalFraction <= 0.5)) {
    throw new RangeError(`evalFraction: expected a number in (0, 0.5], got ${o.evalFraction}`);
  }
  return o;
}

export function arithPrompt(terms: readonly number[]): string {
  return terms.join('+') + PROMPT_SUFFIX;
}

/** The answer alone: "#### 24". */
export function shortCompletion(terms: readonly number[]): string {
  return ANSWER_PREFIX + sum(terms);
}

/** Running sums written out, one two-number sum per step, then the answer line. */
export function stepCompletion(terms: readonly number[]): string {
  const steps: string[] = [];
  let acc = terms[0];
  for (let i = 1; i < terms.length; i++) {
    const next = acc + terms[i];
    steps.push(`${acc}+${terms[i]}=${next}`);
    acc = next;
  }
  return `${steps.join(',')}\n${ANSWER_PREFIX}${acc}`;
}

/** Characters of the longest reference completion under these options (for max-new-tokens). */
export function maxCompletionChars(options: ArithOptions = {}): number {
  const o = resolveArithOptions(options);
  return stepCompletion(new Array<number>(o.maxTerms).fill(o.maxOperand)).length;
}

/** Characters of the longest prompt under these options. */
export function maxPromptChars(options: ArithOptions = {}): number {
  const o = resolveArithOptions(options);
  return arithPrompt(new Array<number>(o.maxTerms).fill(o.maxOperand)).length;
}

function sum(terms: readonly number[]): number {
  return terms.reduce((a, b) => a + b, 0);
}

export function makeProblem(terms: readonly number[]): ArithProblem {
  const total = sum(terms);
  return { prompt: arithPrompt(terms), answer: String(total), terms: [...terms], total };
}

/** Whether a problem belongs to the held-out evaluation split. */
export function isEvalProblem(terms: readonly number[], options: ArithOptions = {}): boolean {
  const { evalFraction } = resolveArithOptions(options);
  return stringHash32(terms.join('+'), EVAL_SALT) / 4294967296 < evalFraction;
}

function drawTerms(rng: () => number, o: ResolvedArithOptions): number[] {
  const k = randInt(rng, o.minTerms, o.maxTerms);
  const terms = new Array<number>(k);
  for (let i = 0; i < k; i++) terms[i] = randInt(rng, o.minOperand, o.maxOperand);
  return terms;
}

function drawFromSplit(rng: () => number, o: ResolvedArithOptions, wantEval: boolean): number[] {
  for (let attempt = 0; attempt < MAX_DRAWS; attempt++) {
    const terms = drawTerms(rng, o);
    if (isEvalProblem(terms, o) === wantEval) return terms;
  }
  throw new RangeError(`arith: no ${wantEval ? 'evaluation' : 'training'} problem found in ${MAX_DRAWS} draws; widen the operand or term ranges`);
}

/** The index-th problem of seed's training stream (never an evaluation problem). */
export function trainExample(seed: number, index: number, options: ArithOptions = {}): ArithProblem {
  checkSeed('seed', seed);
  checkCount('index', index);
  const o = resolveArithOptions(options);
  return makeProblem(drawFromSplit(mulberry32(hash32(seed, index)), o, false));
}

export interface SftOptions extends ArithOptions {
  /** Probability that an example uses the step-by-step form (default 0.5). */
  stepFraction?: number;
}

/**
 * n supervised warm-up examples from the training split, each with a correct reference
 * completion, short or step-by-step (each with probability set by stepFraction).
 */
export function sftExamples(n: number, seed: number, options: SftOptions = {}): SftExample[] {
  checkCount('n', n);
  checkSeed('seed', seed);
  const stepFraction = options.stepFraction ?? 0.5;
  if (!(stepFraction >= 0 && stepFraction <= 1)) throw new RangeError(`stepFraction: expected a number in [0, 1], got ${stepFraction}`);
  const o = resolveArithOptions(options);
  const out: SftExample[] = [];
  for (let i = 0; i < n; i++) {
    const rng = mulberry32(hash32(seed, SFT_SALT, i));
    const terms = drawFromSplit(rng, o, false);
    const form: CompletionForm = rng() < stepFraction ? 'steps' : 'short';
    const completion = form === 'steps' ? stepCompletion(terms) : shortCompletion(terms);
    out.push({ ...makeProblem(terms), completion, form });
  }
  return out;
}

/**
 * n distinct held-out problems, the same for every call with the same options. Term counts
 * are drawn uniformly, so when a small sub-space (two-term sums) runs out, the rest come
 * from the larger ones.
 */
export function evalSet(n: number, options: ArithOptions = {}): ArithProblem[] {
  checkCount('n', n);
  const o = resolveArithOptions(options);
  const rng = mulberry32(hash32(EVAL_SET_SALT));
  const seen = new Set<string>();
  const out: ArithProblem[] = [];
  for (let draws = 0; out.length < n; draws++) {
    if (draws >= MAX_DRAWS + n * 100) {
      throw new RangeError(`n: only ${out.length} distinct evaluation problems found, ${n} requested; lower n or widen the ranges`);
    }
    const terms = drawTerms(rng, o);
    const key = terms.join('+');
    if (seen.has(key) || !isEvalProblem(terms, o)) continue;
    seen.add(key);
    out.push(makeProblem(terms));
  }
  return out;
}

export interface ArithTaskOptions extends ArithOptions {
  seed?: number;
  /** Size of evalSet() when called without n (default 200). */
  evalSize?: number;
}

/** The arithmetic task as the trainer consumes it. */
export function arithTask(options: ArithTaskOptions = {}): Task & { options: ResolvedArithOptions } {
  const { seed = 0, evalSize = 200, ...rest } = options;
  checkSeed('seed', seed);
  checkCount('evalSize', evalSize);
  const o = resolveArithOptions(rest);
  return {
    name: 'arith',
    trainSize: null,
    options: o,
    trainExample: (index: number) => trainExample(seed, index, o),
    evalSet: (n = evalSize) => evalSet(n, o),
  };
}
