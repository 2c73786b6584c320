// A task from a JSONL file: one JSON object per line with a `prompt` (or `question`) and an
// `answer`. Other fields are kept on the example so user rewards can read them; a
// `solution` (or `completion`) field is a reference completion for the supervised warm-up.
import { readFileSync } from 'node:fs';
import type { Example, Task } from './types.js';
import { checkCount, checkSeed, hash32, permutation, stringHash32 } from './random.js';

const MAX_REPORTED_ERRORS = 10;

/**
 * Parses JSONL text. Blank lines are skipped; every bad line is reported (up to ten) in one
 * error, each as `<source>:<line>: <problem>`.
 */
export interface ParseJsonlOptions {
  /** Every line needs an "answer" (default true; warm-up data needs only prompt and completion). */
  requireAnswer?: boolean;
}

export function parseJsonl(text: string, source = '<jsonl>', options: ParseJsonlOptions = {}): Example[] {
  const lines = text.replace(/^\uFEFF/, '').split('\n');
  const examples: Example[] = [];
  const errors: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].replace(/\r$/, '');
    if (line.trim() === '') continue;
    const where = `${source}:${i + 1}`;
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch (err) {
      errors.push(`${where}: invalid JSON (${(err as Error).message})`);
      continue;
    }
    if (record === null || typeof record !== 'object' || Array.isArray(record)) {
      errors.push(`${where}: expected a JSON object, got ${Array.isArray(record) ? 'an array' : JSON.stringify(record)}`);
      continue;
    }
    const r = record as Record<string, unknown>;
    const prompt = r.prompt ?? r.question;
    if (typeof prompt !== 'string' || prompt === '') {
      const has = 'prompt' in r ? 'prompt' : 'question' in r ? 'question' : null;
      errors.push(has === null
        ? `${where}: missing "prompt" (or "question") field`
        : `${where}: "${has}" must be a non-empty string, got ${JSON.stringify(r[has])}`);
      continue;
    }
    const answer = r.answer;
    if (options.requireAnswer === false && answer === undefined) {
      examples.push({ ...r, prompt, answer: '' });
      continue;
    }
    if (!(typeof answer === 'string' && answer.trim() !== '') && !(typeof answer === 'number' && Number.isFinite(answer))) {
      errors.push('answer' in r
        ? `${where}: "answer" must be a non-empty string or a finite number, got ${JSON.stringify(answer)}`
        : `${where}: missing "answer" field`);
      continue;
    }
    examples.push({ ...r, prompt, answer: String(answer) });
  }
  if (errors.length > 0) {
    const shown = errors.slice(0, MAX_REPORTED_ERRORS).join('\n  ');
    const more = errors.length > MAX_REPORTED_ERRORS ? `\n  … and ${errors.length - MAX_REPORTED_ERRORS} more` : '';
    throw new SyntaxError(`${source}: ${errors.length} bad line${errors.length > 1 ? 's' : ''}:\n  ${shown}${more}`);
  }
  if (examples.length === 0) throw new RangeError(`${source}: no examples (the file has no non-blank lines)`);
  return examples;
}

export function loadJsonl(path: string, options: ParseJsonlOptions = {}): Example[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`task file ${path}: ${(err as Error).message}`, { cause: err });
  }
  return parseJsonl(text, path, options);
}

/** Field names read as an example's reference completion, in order of preference. */
export const COMPLETION_FIELDS = ['solution', 'completion'] as const;

/** An example's reference completion (its "solution" or "completion" field), or null when it has none. */
export function completionOf(example: Example): string | null {
  for (const field of COMPLETION_FIELDS) {
    const v = example[field];
    if (typeof v === 'string' && v.trim() !== '') return v;
    if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  }
  return null;
}

export interface JsonlTaskOptions {
  seed?: number;
  /** Fraction held out for evaluation when no evalPath is given (default 0.1). */
  evalFraction?: number;
  /** A separate JSONL file for evaluation; then every line of the main file trains. */
  evalPath?: string;
}

// Same salt as nothing else: the split must not move when the seed changes.
const SPLIT_SALT = 0x0a5f_1e1d;

/**
 * Splits examples into train and eval deterministically, independent of any seed: the
 * ceil(fraction·N) examples with the smallest prompt hash are held out (at least one when N ≥ 2).
 * Duplicated prompts hash alike, so a duplicate never sits on both sides unless it straddles
 * the cut.
 */
export function splitExamples(examples: readonly Example[], evalFraction: number): { train: Example[]; eval: Example[] } {
  if (!(evalFraction >= 0 && evalFraction < 1)) throw new RangeError(`evalFraction: expected a number in [0, 1), got ${evalFraction}`);
  const n = examples.length;
  const nEval = evalFraction === 0 ? 0 : Math.min(n - 1, Math.max(1, Math.ceil(evalFraction * n)));
  const order = examples.map((e, i) => ({ i, h: stringHash32(e.prompt, SPLIT_SALT) }));
  order.sort((a, b) => a.h - b.h || a.i - b.i);
  const held = new Set(order.slice(0, nEval).map((o) => o.i));
  return {
    train: examples.filter((_, i) => !held.has(i)),
    eval: examples.filter((_, i) => held.has(i)),
  };
}

/** A JSONL task: the training stream walks a fresh seeded permutation of the train split each epoch. */
export function jsonlTask(path: string, options: JsonlTaskOptions = {}): Task {
  const seed = options.seed ?? 0;
  checkSeed('seed', seed);
  const all = loadJsonl(path);
  let train: Example[];
  let held: Example[];
  if (options.evalPath !== undefined) {
    train = all;
    held = loadJsonl(options.evalPath);
  } else {
    ({ train, eval: held } = splitExamples(all, options.evalFraction ?? 0.1));
  }
  if (train.length === 0) throw new RangeError(`${path}: no training examples left after the evaluation split`);
  let epochCached = -1;
  let perm: Uint32Array = new Uint32Array(0);
  return {
    name: `jsonl:${path}`,
    trainSize: train.length,
    trainSet: train,
    trainExample(index: number): Example {
      checkCount('index', index);
      const epoch = Math.floor(index / train.length);
      if (epoch !== epochCached) {
        perm = permutation(train.length, hash32(seed, epoch));
        epochCached = epoch;
      }
      return train[perm[index % train.length]];
    },
    evalSet(n?: number): Example[] {
      if (n !== undefined) checkCount('n', n);
      return held.slice(0, n ?? held.length);
    },
  };
}
