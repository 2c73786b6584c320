// Training progress on stderr (stdout stays free for machine-readable output). On a
// terminal: one status line redrawn in place, with a bar. Elsewhere (CI logs, a file):
// one plain line per update, since carriage returns would pile up there. Evaluations and
// other messages get a line of their own in both cases.

export interface ProgressStats {
  /** Mean reward of the step's samples. */
  reward?: number;
  /** Fraction of the step's samples that are correct. */
  accuracy?: number;
  /** Mean response length (tokens). */
  meanLength?: number;
  lambda?: number;
  /** Mean training loss (the supervised warm-up's). */
  loss?: number;
}

export interface EvalSummary {
  accuracy?: number;
  meanLength?: number;
  reward?: number;
}

export interface ProgressStream {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface ProgressOptions {
  /** The step the run ends at. */
  total: number;
  /** Steps already done before this process started (a resumed run); the ETA uses this process's pace. */
  startStep?: number;
  /** Default process.stderr. */
  stream?: ProgressStream;
  /** Redraw in place; default stream.isTTY. */
  tty?: boolean;
  /** Clock in milliseconds; default Date.now. */
  now?: () => number;
  /** Put before every line (status and messages), e.g. which run of several this is. */
  label?: () => string;
  /** What one step is called on the status line; default 'step'. */
  unit?: string;
  /** Off a terminal, a line every this many steps (and at the last); default 1. */
  every?: number;
}

/** 3725 s → "1h02m", 192 s → "3m12s", 7.4 s → "7s". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

function num(v: number | undefined, digits = 3): string | undefined {
  if (v === undefined) return undefined;
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1);
  return String(Number(v.toFixed(digits)));
}

function bar(fraction: number, width: number): string {
  const filled = Math.max(0, Math.min(width, Math.round(fraction * width)));
  return `${'█'.repeat(filled)}${'░'.repeat(width - filled)}`;
}

export class Progress {
  readonly total: number;
  readonly #stream: ProgressStream;
  readonly #tty: boolean;
  readonly #now: () => number;
  readonly #startStep: number;
  readonly #startTime: number;
  readonly #label: (() => string) | undefined;
  readonly #unit: string;
  readonly #every: number;
  #step: number;
  #stats: ProgressStats = {};
  #evalAccuracy: number | undefined;
  #bestEval: number | undefined;
  #drawn = false;

  constructor(options: ProgressOptions) {
    const { total } = options;
    if (!Number.isSafeInteger(total) || total < 0) throw new RangeError(`total: expected a non-negative integer, got ${total}`);
    const startStep = options.startStep ?? 0;
    if (!Number.isSafeInteger(startStep) || startStep < 0 || startStep > total)
      throw new RangeError(`startStep: expected an integer in [0, total], got ${startStep}`);
    this.total = total;
    this.#stream = options.stream ?? process.stderr;
    this.#tty = options.tty ?? this.#stream.isTTY === true;
    this.#now = options.now ?? Date.now;
    this.#startStep = startStep;
    this.#step = startStep;
    this.#startTime = this.#now();
    this.#label = options.label;
    this.#unit = options.unit ?? 'step';
    this.#every = options.every ?? 1;
  }

  #prefix(): string {
    const label = this.#label?.();
    return label ? `${label} ` : '';
  }

  /** Seconds left at the pace of this process so far; undefined before its first step. */
  eta(): number | undefined {
    const done = this.#step - this.#startStep;
    if (done <= 0) return undefined;
    const elapsed = (this.#now() - this.#startTime) / 1000;
    return (elapsed / done) * (this.total - this.#step);
  }

  /** The status text (without bar or terminal codes). */
  statusText(): string {
    const s = this.#stats;
    const fields: Array<[string, string | undefined]> = [
      ['loss', num(s.loss, 4)],
      ['reward', num(s.reward)],
      ['acc', num(s.accuracy)],
      ['eval', num(this.#evalAccuracy)],
      ['len', num(s.meanLength, 1)],
      ['λ', num(s.lambda, 4)],
    ];
    const eta = this.eta();
    const parts = fields.filter(([, v]) => v !== undefined).map(([k, v]) => `${k} ${v}`);
    parts.push(this.#step >= this.total ? `took ${formatDuration((this.#now() - this.#startTime) / 1000)}` : `eta ${eta === undefined ? '?' : formatDuration(eta)}`);
    const width = String(this.total).length;
    return `${this.#prefix()}${this.#unit} ${String(this.#step).padStart(width)}/${this.total}  ${parts.join('  ')}`;
  }

  /** Call after step `step` completed. */
  update(step: number, stats: ProgressStats = {}): void {
    if (!Number.isSafeInteger(step) || step < 0) throw new RangeError(`step: expected a non-negative integer, got ${step}`);
    this.#step = step;
    this.#stats = { ...stats };
    if (this.#tty) this.#redraw();
    else if (step % this.#every === 0 || step === this.total) this.#stream.write(`${this.statusText()}\n`);
  }

  /** One summary line for an evaluation at `step`. */
  eval(step: number, summary: EvalSummary): void {
    if (summary.accuracy !== undefined) {
      this.#evalAccuracy = summary.accuracy;
      if (this.#bestEval === undefined || summary.accuracy > this.#bestEval) this.#bestEval = summary.accuracy;
    }
    const parts = [
      summary.accuracy !== undefined ? `accuracy ${num(summary.accuracy)} (best ${num(this.#bestEval)})` : undefined,
      summary.reward !== undefined ? `reward ${num(summary.reward)}` : undefined,
      summary.meanLength !== undefined ? `mean length ${num(summary.meanLength, 1)}` : undefined,
    ].filter((p) => p !== undefined);
    this.log(`eval @ step ${step}: ${parts.join(', ') || 'done'}`);
  }

  /** A message on its own line; the status line (on a terminal) is redrawn below it. */
  log(message: string): void {
    if (this.#tty && this.#drawn) this.#stream.write('\r\x1b[2K');
    this.#stream.write(`${this.#prefix()}${message}\n`);
    this.#drawn = false;
    if (this.#tty && this.#step > this.#startStep) this.#redraw();
  }

  /** Ends the status line (terminal) so later output starts on a fresh line. */
  done(): void {
    if (this.#tty && this.#drawn) this.#stream.write('\n');
    this.#drawn = false;
  }

  #redraw(): void {
    const columns = this.#stream.columns && this.#stream.columns > 20 ? this.#stream.columns : 100;
    const text = this.statusText();
    const barWidth = Math.max(0, Math.min(24, columns - text.length - 4));
    let line = barWidth >= 8 ? `${bar(this.total ? this.#step / this.total : 1, barWidth)} ${text}` : text;
    // Never wrap: a wrapped line cannot be erased by \r.
    if (line.length > columns - 1) line = line.slice(0, columns - 1);
    this.#stream.write(`\r\x1b[2K${line}`);
    this.#drawn = true;
  }
}
