// Learning-rate schedules for AdamW: `lr` there is a number or a function of the step.
//
// The function receives the 1-based number of the update about to be made (the `step`
// AdamW.step() reports, and the t of Adam's bias correction). linearWarmup reproduces
// transformers' get_{constant,linear,cosine}_schedule_with_warmup, whose LambdaLR sees
// the number of updates already made, t − 1; so, exactly as in a Hugging Face Trainer
// run, the first update of a warmup uses lr 0, update warmupSteps + 1 reaches the peak,
// and a linear or cosine decay reaches 0 after totalSteps updates. Past totalSteps the
// rate stays 0 (transformers' cosine would climb again; nobody wants that).

export type LrSchedule = (step: number) => number;

export type ScheduleKind = 'constant' | 'linear' | 'cosine';

export interface WarmupOptions {
  /** What follows the warmup: hold the peak (default), or decay to 0 at totalSteps. */
  schedule?: ScheduleKind;
}

function count(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0)
    throw new RangeError(`${name}: expected a non-negative integer, got ${String(value)}`);
  return value;
}

/**
 * peak · (linear warmup over warmupSteps updates, then `schedule`), as transformers'
 * schedules with warmup compute it. totalSteps is required for 'linear' and 'cosine'.
 */
export function linearWarmup(peak: number, warmupSteps: number, totalSteps?: number, options: WarmupOptions = {}): LrSchedule {
  if (typeof peak !== 'number' || !Number.isFinite(peak) || peak < 0)
    throw new RangeError(`peak: expected a finite number >= 0, got ${String(peak)}`);
  const warmup = count(warmupSteps, 'warmupSteps');
  if (typeof options !== 'object' || options === null) throw new TypeError('options: expected an object');
  const kind = options.schedule ?? 'constant';
  if (kind !== 'constant' && kind !== 'linear' && kind !== 'cosine')
    throw new TypeError(`schedule: expected 'constant', 'linear' or 'cosine', got ${JSON.stringify(kind)}`);
  let total = 0;
  if (totalSteps !== undefined) {
    total = count(totalSteps, 'totalSteps');
    if (total < warmup) throw new RangeError(`totalSteps: ${total} is less than warmupSteps ${warmup}`);
  } else if (kind !== 'constant') {
    throw new TypeError(`totalSteps: required by the '${kind}' schedule`);
  }

  // transformers' lambdas of current_step (= updates already made), divisors max(1, ·) included.
  const factor = (done: number): number => {
    if (done < warmup) return done / Math.max(1, warmup);
    if (kind === 'constant') return 1;
    const progress = Math.min(1, (done - warmup) / Math.max(1, total - warmup));
    if (kind === 'linear') return Math.max(0, (total - done) / Math.max(1, total - warmup));
    return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
  };
  return (step: number): number => {
    if (!Number.isSafeInteger(step) || step < 1) throw new RangeError(`step: expected an integer >= 1, got ${String(step)}`);
    return peak * factor(step - 1);
  };
}
