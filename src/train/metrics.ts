// metrics.jsonl: one JSON object per line, each with `kind` and `step` first, appended
// with one write() per line (and an fsync), so a crash loses at most the line being
// written and never garbles an earlier one. Resuming from the checkpoint of step N drops
// every line after step N, so the file of a resumed run equals an uninterrupted run's.
//
// Steps never decrease down the file (the writer enforces it): lines of a warmup phase
// use steps at or before the first training step (e.g. 0). The trainer writes all lines
// of step N before it saves checkpoint N.
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, statSync } from 'node:fs';
import { writeAll, writeFileAtomic } from '../atomic_file.js';

export const METRICS_FILE = 'metrics.jsonl';

export type MetricKind = 'train' | 'eval' | 'warmup';
export const METRIC_KINDS: readonly MetricKind[] = ['train', 'eval', 'warmup'];

/**
 * The field names the trainer writes and the report plots (snake_case, as TRL and verl
 * logs). All optional: a field a loss mode does not have is left out, not written as 0.
 */
export interface TrainMetrics {
  loss?: number;
  reward_mean?: number;
  reward_std?: number;
  /** Fraction of sampled responses that are correct. */
  accuracy?: number;
  advantage_mean?: number;
  advantage_std?: number;
  advantage_abs_mean?: number;
  clip_frac_low?: number;
  clip_frac_high?: number;
  ratio_mean?: number;
  kl?: number;
  entropy?: number;
  mean_length?: number;
  length_correct?: number;
  length_wrong?: number;
  truncated_frac?: number;
  degenerate_frac?: number;
  lambda?: number;
  lambda_grad?: number;
  weight_min?: number;
  weight_max?: number;
  lr?: number;
  grad_norm?: number;
  time_rollout?: number;
  time_score?: number;
  time_train?: number;
}

export interface EvalMetrics {
  /** Greedy accuracy on the held-out prompts. */
  accuracy?: number;
  mean_length?: number;
  reward_mean?: number;
  truncated_frac?: number;
  time_eval?: number;
}

export type MetricValue = number | string | boolean | null | MetricValue[] | { [key: string]: MetricValue };

export interface MetricRecord {
  kind: MetricKind;
  step: number;
  [key: string]: MetricValue | undefined;
}

function checkRecord(record: unknown, where: string): MetricRecord {
  if (typeof record !== 'object' || record === null || Array.isArray(record)) throw new TypeError(`${where}: expected an object with kind and step`);
  const { kind, step } = record as Record<string, unknown>;
  if (!METRIC_KINDS.includes(kind as MetricKind))
    throw new TypeError(`${where}: kind: expected ${METRIC_KINDS.map((k) => `'${k}'`).join(', ')}, got ${JSON.stringify(kind)}`);
  if (typeof step !== 'number' || !Number.isSafeInteger(step)) throw new TypeError(`${where}: step: expected an integer, got ${JSON.stringify(step)}`);
  return record as MetricRecord;
}

/** One line: kind and step first; NaN and ±Infinity become null (JSON has no such numbers). */
function serialise(record: MetricRecord): string {
  const { kind, step, ...rest } = record;
  return `${JSON.stringify({ kind, step, ...rest }, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v))}\n`;
}

/**
 * Parses metrics text. An unterminated last line that does not parse is the line a crash
 * interrupted: it is dropped. Any other bad line is corruption and an error naming it.
 */
function parseLines(text: string, path: string): MetricRecord[] {
  const records: MetricRecord[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.trim() === '') continue;
    const where = `${path}:${i + 1}`;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (e) {
      if (i === lines.length - 1) break; // no newline after it: the interrupted line
      throw new Error(`${where}: not valid JSON (${(e as Error).message})`);
    }
    const record = checkRecord(value, where);
    if (records.length && record.step < records[records.length - 1].step)
      throw new Error(`${where}: step ${record.step} after step ${records[records.length - 1].step} (steps must not decrease)`);
    records.push(record);
  }
  return records;
}

export interface ReadMetricsOptions {
  /** Return [] when the file does not exist (a run that has not logged yet); default false. */
  allowMissing?: boolean;
}

/** Reads metrics.jsonl (of a finished, crashed or running run). */
export function readMetrics(path: string, options: ReadMetricsOptions = {}): MetricRecord[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if (options.allowMissing && (e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new Error(`${path}: cannot read: ${(e as Error).message}`, { cause: e });
  }
  return parseLines(text, path);
}

export interface MetricsWriterOptions {
  /**
   * Continue the file of a run resumed from the checkpoint of this step: lines after it
   * are dropped. Without it the file must not exist or be empty (a new run never appends
   * to an old run's metrics).
   */
  resumeStep?: number;
  /** fsync after every line (default true): a line written before a checkpoint outlives a power cut with it. */
  fsync?: boolean;
}

export class MetricsWriter {
  readonly path: string;
  #fd: number | undefined;
  #lastStep: number | undefined;
  readonly #fsync: boolean;

  private constructor(path: string, fd: number, lastStep: number | undefined, fsync: boolean) {
    this.path = path;
    this.#fd = fd;
    this.#lastStep = lastStep;
    this.#fsync = fsync;
  }

  static open(path: string, options: MetricsWriterOptions = {}): MetricsWriter {
    const { resumeStep } = options;
    let lastStep: number | undefined;
    if (resumeStep === undefined) {
      if (existsSync(path) && statSync(path).size > 0)
        throw new Error(`${path}: already holds metrics; a new run needs a fresh --out directory (or resume this one; if it stopped before its first checkpoint, --restart starts it over)`);
    } else {
      if (!Number.isSafeInteger(resumeStep) || resumeStep < 0)
        throw new RangeError(`resumeStep: expected a non-negative integer, got ${resumeStep}`);
      let kept: MetricRecord[] = [];
      if (existsSync(path)) {
        const records = parseLines(readFileSync(path, 'utf8'), path);
        kept = records.filter((r) => r.step <= resumeStep);
        // Rewritten whole and renamed into place: a crash during truncation leaves the old file.
        writeFileAtomic(path, kept.map(serialise).join(''));
      }
      if (kept.length) lastStep = kept[kept.length - 1].step;
    }
    const fd = openSync(path, 'a');
    return new MetricsWriter(path, fd, lastStep, options.fsync ?? true);
  }

  /** The step of the last line in the file (undefined while it is empty). */
  get lastStep(): number | undefined {
    return this.#lastStep;
  }

  /** Appends one line. */
  write(record: MetricRecord): void {
    if (this.#fd === undefined) throw new Error(`${this.path}: the metrics writer is closed`);
    checkRecord(record, 'record');
    if (this.#lastStep !== undefined && record.step < this.#lastStep)
      throw new RangeError(`record.step: ${record.step} is before the last logged step ${this.#lastStep} (steps must not decrease)`);
    writeAll(this.#fd, Buffer.from(serialise(record), 'utf8'));
    if (this.#fsync) fsyncSync(this.#fd);
    this.#lastStep = record.step;
  }

  close(): void {
    if (this.#fd === undefined) return;
    const fd = this.#fd;
    this.#fd = undefined;
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
}
