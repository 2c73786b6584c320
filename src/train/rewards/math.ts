// The math reward: find the final answer a completion commits to, and compare it with the
// reference as an exact number. Numbers are compared as exact rationals (BigInt), so 3/4,
// 0.75 and 0.750 are equal and 0.333 is not 1/3: a tolerance would reward near-misses.
//
// Where the answer is looked for, most explicit first (the last occurrence of each wins):
//   \boxed{...} (nested braces)  >  "Answer: ..."  >  "#### ..."  >  the last number in the text.
// A completion that writes an explicit marker but puts no parseable answer behind it gets 0;
// it does not fall back to the last number (that would reward a broken answer line).
import type { Example } from '../tasks/types.js';

export type AnswerSource = 'boxed' | 'answer' | 'hash' | 'last_number' | 'whole';

export interface ExtractedAnswer {
  text: string;
  source: AnswerSource;
}

/** An exact rational num/den with den > 0 and gcd(num, den) = 1. */
export interface Rational {
  num: bigint;
  den: bigint;
}

export type ParsedAnswer =
  | { kind: 'number'; value: Rational }
  | { kind: 'text'; value: string };

// One number: optional minus, integer part with or without thousands separators (groups of
// exactly three digits), optional decimals and exponent, optionally "/ denominator".
// The look-behind keeps "x2", "a.5" and the minus of "12-7" from starting a number.
const INT = String.raw`(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)`;
const UNSIGNED = String.raw`(?:${INT}(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?`;
const NUMBER_SOURCE = String.raw`(?<![\w.])-?${UNSIGNED}(?:\s*\/\s*-?${UNSIGNED})?`;

function numberRegex(): RegExp {
  return new RegExp(NUMBER_SOURCE, 'g');
}

const NUMBER_ONLY = new RegExp(String.raw`^-?${UNSIGNED}(?:\/-?${UNSIGNED})?$`);

/** The content of the last well-formed \boxed{...} (or \fbox{...}), braces matched. */
export function lastBoxed(text: string): string | null {
  const re = /\\(?:boxed|fbox)\b/g;
  let found: string | null = null;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    let i = m.index + m[0].length;
    while (i < text.length && text[i] === ' ') i++;
    if (text[i] === '{') {
      let depth = 0;
      let end = -1;
      for (let j = i; j < text.length; j++) {
        const c = text[j];
        if (c === '\\') { j++; continue; } // \{ and \} are literal braces
        if (c === '{') depth++;
        else if (c === '}' && --depth === 0) { end = j; break; }
      }
      if (end >= 0) found = text.slice(i + 1, end);
    } else if (i > m.index + m[0].length) {
      // "\boxed 5": the argument is the next run of non-space characters.
      const arg = /^[^\s$]+/.exec(text.slice(i));
      if (arg) found = arg[0];
    }
  }
  return found;
}

function restOfMarkerLine(text: string, marker: RegExp): string | null {
  let last: RegExpExecArray | null = null;
  for (let m = marker.exec(text); m !== null; m = marker.exec(text)) last = m;
  if (last === null) return null;
  const after = text.slice(last.index + last[0].length);
  const newline = after.indexOf('\n');
  const line = (newline < 0 ? after : after.slice(0, newline)).trim();
  if (line !== '' || newline < 0) return line;
  // "Answer:" alone on its line: the answer is on the next non-empty line.
  const next = after.slice(newline + 1).split('\n').find((l) => l.trim() !== '');
  return next === undefined ? '' : next.trim();
}

/** The answer a completion commits to, or null when it has none. */
export function extractAnswer(completion: string): ExtractedAnswer | null {
  const boxed = lastBoxed(completion);
  if (boxed !== null) return { text: boxed, source: 'boxed' };
  const answer = restOfMarkerLine(completion, /\banswer\s*\**\s*[:：]/gi);
  if (answer !== null) return { text: answer, source: 'answer' };
  const hash = restOfMarkerLine(completion, /####+/g);
  if (hash !== null) return { text: hash, source: 'hash' };
  const numbers = cleanLatex(completion).match(numberRegex());
  if (numbers === null) return null;
  return { text: numbers[numbers.length - 1], source: 'last_number' };
}

/** The reference's answer: its marker if it has one (GSM8K's "#### 72"), else all of it. */
export function referenceAnswer(reference: string): ExtractedAnswer {
  const boxed = lastBoxed(reference);
  if (boxed !== null) return { text: boxed, source: 'boxed' };
  const answer = restOfMarkerLine(reference, /\banswer\s*\**\s*[:：]/gi);
  if (answer !== null && answer !== '') return { text: answer, source: 'answer' };
  const hash = restOfMarkerLine(reference, /####+/g);
  if (hash !== null && hash !== '') return { text: hash, source: 'hash' };
  return { text: reference.trim(), source: 'whole' };
}

// LaTeX and typography that never changes the value: \frac{a}{b} -> (a)/(b) only for plain
// numbers, \text{..} and friends unwrapped, spacing commands, $, %, degrees, unicode minus.
function cleanLatex(s: string): string {
  return s
    .replace(/[\u2212\u2013]/g, '-')
    .replace(/\\[dt]?frac\s*\{\s*(-?[\d.,]+)\s*\}\s*\{\s*(-?[\d.,]+)\s*\}/g, '$1/$2')
    .replace(/\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}/g, '$1')
    .replace(/\^\s*\{?\s*\\circ\s*\}?/g, '')
    .replace(/\\(?:left|right)\b/g, '')
    .replace(/\\[,;:! ]/g, '')
    .replace(/\\?[$%]/g, '')
    .replace(/°/g, '');
}

function normaliseText(s: string): string {
  return cleanLatex(s)
    .replace(/\\[dt]frac/g, '\\frac')
    .replace(/\*+/g, '')
    .replace(/\s+/g, '')
    .replace(/[.。]+$/, '')
    .toLowerCase();
}

function gcd(a: bigint, b: bigint): bigint {
  if (a < 0n) a = -a;
  if (b < 0n) b = -b;
  while (b !== 0n) [a, b] = [b, a % b];
  return a;
}

function reduce(num: bigint, den: bigint): Rational | null {
  if (den === 0n) return null;
  if (den < 0n) { num = -num; den = -den; }
  const g = gcd(num, den);
  return g > 1n ? { num: num / g, den: den / g } : { num, den };
}

// Exponents beyond this are not answers anyone means; refuse them rather than build huge BigInts.
const MAX_EXPONENT = 400;

function parseDecimal(s: string): Rational | null {
  const m = /^(-?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(s.replace(/,/g, ''));
  if (m === null || (m[2] === '' && (m[3] ?? '') === '')) return null;
  const digits = (m[2] || '0') + (m[3] ?? '');
  let exp = -(m[3] ?? '').length + (m[4] ? Number(m[4]) : 0);
  if (Math.abs(exp) > MAX_EXPONENT) return null;
  let num = BigInt(digits);
  let den = 1n;
  if (exp >= 0) num *= 10n ** BigInt(exp);
  else den = 10n ** BigInt(-exp);
  if (m[1] === '-') num = -num;
  return reduce(num, den);
}

/** Parses one number token ("1,234", "-0.50", "3/4", "1e3") into an exact rational. */
export function parseNumber(token: string): Rational | null {
  const s = token.replace(/\s+/g, '');
  if (!NUMBER_ONLY.test(s)) return null;
  const slash = s.indexOf('/');
  if (slash < 0) return parseDecimal(s);
  const a = parseDecimal(s.slice(0, slash));
  const b = parseDecimal(s.slice(slash + 1));
  if (a === null || b === null || b.num === 0n) return null;
  return reduce(a.num * b.den, a.den * b.num);
}

/**
 * Reads an extracted answer: a number when it holds exactly one (after "x =", units, $ and
 * trailing periods are set aside), else normalised text for a symbolic comparison. Null when
 * there is nothing to compare.
 */
export function parseAnswer(text: string): ParsedAnswer | null {
  let s = cleanLatex(text).replace(/\*+/g, '').trim();
  // "x = 24", "12+7=19": the value is what follows the last "=".
  const eq = s.lastIndexOf('=');
  if (eq >= 0 && s.slice(eq + 1).trim() !== '') s = s.slice(eq + 1).trim();
  const numbers = s.match(numberRegex()) ?? [];
  if (numbers.length === 1) {
    // Whatever surrounds the number must be units or punctuation, not more mathematics.
    const rest = s.replace(numberRegex(), ' ');
    if (!/[\d^_\\{}()[\]+*/=<>|]/.test(rest)) {
      const value = parseNumber(numbers[0]);
      if (value !== null) return { kind: 'number', value };
    }
  }
  const normalised = normaliseText(text);
  return normalised === '' ? null : { kind: 'text', value: normalised };
}

export function rationalEquals(a: Rational, b: Rational): boolean {
  return a.num * b.den === b.num * a.den;
}

export function answersMatch(candidate: ParsedAnswer | null, reference: ParsedAnswer | null): boolean {
  if (candidate === null || reference === null) return false;
  if (candidate.kind === 'number' && reference.kind === 'number') return rationalEquals(candidate.value, reference.value);
  if (candidate.kind === 'text' && reference.kind === 'text') return candidate.value === reference.value;
  return false;
}

/** Whether completion's final answer equals the reference answer. */
export function isCorrect(completion: string, reference: string | number): boolean {
  const extracted = extractAnswer(completion);
  if (extracted === null) return false;
  const candidate = parseAnswer(extracted.text);
  // A bare last number is only ever compared as a number: text fallback needs a marker.
  if (extracted.source === 'last_number' && candidate?.kind !== 'number') return false;
  return answersMatch(candidate, parseAnswer(referenceAnswer(String(reference)).text));
}

/** Built-in reward: 1 when the completion's final answer equals example.answer, else 0. */
export function mathReward(example: Pick<Example, 'answer'>, completion: string): number {
  return isCorrect(completion, example.answer) ? 1 : 0;
}
