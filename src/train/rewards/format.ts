// Shape rewards: did the completion end with a well-formed answer line, and (optionally) is it
// too long. Both are meant to be weighted next to the math reward, not used alone.
import type { Example } from '../tasks/types.js';
import { lastBoxed, parseAnswer } from './math.js';

export type AnswerMarker = '####' | 'Answer:' | 'boxed' | 'any';

export interface FormatRewardOptions {
  /** Which answer line counts as well formed (default 'any' of the three). */
  marker?: AnswerMarker;
}

const HASH_LINE = /^####[ \t]*(\S.*)$/;
const ANSWER_LINE = /^answer[ \t]*:[ \t]*(\S.*)$/i;

function lastLine(completion: string): string {
  const lines = completion.trimEnd().split('\n');
  return lines[lines.length - 1].trim();
}

function isNumberAnswer(text: string): boolean {
  return parseAnswer(text)?.kind === 'number';
}

/**
 * 1 when the completion's last non-blank line is an answer line (`#### 24`, `Answer: 24`, or
 * `\boxed{24}` for marker 'boxed'/'any') holding one number and nothing after it; else 0.
 */
export function makeFormatReward(options: FormatRewardOptions = {}): (example: Example, completion: string) => number {
  const marker = options.marker ?? 'any';
  if (!['####', 'Answer:', 'boxed', 'any'].includes(marker)) {
    throw new RangeError(`marker: expected '####', 'Answer:', 'boxed' or 'any', got ${JSON.stringify(marker)}`);
  }
  return (_example, completion) => {
    const line = lastLine(completion);
    if (marker === '####' || marker === 'any') {
      const m = HASH_LINE.exec(line);
      if (m !== null && isNumberAnswer(m[1])) return 1;
    }
    if (marker === 'Answer:' || marker === 'any') {
      const m = ANSWER_LINE.exec(line);
      if (m !== null && isNumberAnswer(m[1])) return 1;
    }
    if (marker === 'boxed' || marker === 'any') {
      const boxed = lastBoxed(line);
      // The box must close the line: "\boxed{24}" or "$\boxed{24}$." but not "\boxed{24} or 25".
      if (boxed !== null && /\}\s*\$*\s*\.?$/.test(line) && isNumberAnswer(boxed)) return 1;
    }
    return 0;
  };
}

/** The default format reward: any of the three answer-line forms. */
export const formatReward = makeFormatReward();

export interface LengthPenaltyOptions {
  /** The length from which the full penalty applies (DAPO's L_max). */
  maxLength: number;
  /** Width of the soft zone before maxLength where the penalty ramps from 0 (DAPO's L_cache). */
  softZone: number;
  /** How a completion's length is measured; characters by default (pass a token counter to use tokens). */
  measure?: (completion: string) => number;
}

/**
 * DAPO's soft overlong punishment: 0 up to maxLength − softZone, then falling linearly to −1 at
 * maxLength, and −1 beyond. Add it with a weight next to the correctness reward.
 */
export function makeLengthPenalty(options: LengthPenaltyOptions): (example: Example, completion: string) => number {
  const { maxLength, softZone } = options;
  if (!Number.isFinite(maxLength) || maxLength <= 0) throw new RangeError(`maxLength: expected a positive number, got ${maxLength}`);
  if (!Number.isFinite(softZone) || softZone < 0 || softZone > maxLength) {
    throw new RangeError(`softZone: expected a number in [0, maxLength = ${maxLength}], got ${softZone}`);
  }
  const measure = options.measure ?? ((c: string) => c.length);
  return (_example, completion) => {
    const length = measure(completion);
    if (length <= maxLength - softZone) return 0;
    if (length > maxLength) return -1;
    return (maxLength - softZone - length) / softZone;
  };
}
