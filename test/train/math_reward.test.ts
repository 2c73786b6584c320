// The math reward reads the final answer the way a grader would and compares exact values:
// each "match" case has a near-miss twin that must score 0, so a reward that says 1 too
// readily (or 0 too readily) fails here. Also the format reward and the length penalty.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  mathReward, isCorrect, extractAnswer, referenceAnswer, parseNumber, parseAnswer, lastBoxed, rationalEquals,
} from '../../src/train/rewards/math.js';
import { formatReward, makeFormatReward, makeLengthPenalty } from '../../src/train/rewards/format.js';

const ex = (answer: string) => ({ prompt: 'p', answer });

describe('extractAnswer', () => {
  test('prefers \\boxed over Answer: over #### over the last number', () => {
    assert.deepEqual(extractAnswer('Answer: 3\n#### 4\nso \\boxed{5} then 6'), { text: '5', source: 'boxed' });
    assert.deepEqual(extractAnswer('#### 4\nAnswer: 3 then 6'), { text: '3 then 6', source: 'answer' });
    assert.deepEqual(extractAnswer('1 then 2\n#### 4\n7'), { text: '4', source: 'hash' });
    assert.deepEqual(extractAnswer('1, then 2 and 35.'), { text: '35', source: 'last_number' });
    assert.equal(extractAnswer('no digits at all'), null);
  });

  test('the last occurrence of a marker wins', () => {
    assert.equal(extractAnswer('#### 1\n#### 2')?.text, '2');
    assert.equal(extractAnswer('Answer: 1\nanswer: 2')?.text, '2');
    assert.equal(extractAnswer('\\boxed{1} or rather \\boxed{2}')?.text, '2');
  });

  test('\\boxed with nested and escaped braces', () => {
    assert.equal(lastBoxed('x = \\boxed{\\frac{1}{\\sqrt{2}}} done'), '\\frac{1}{\\sqrt{2}}');
    assert.equal(lastBoxed('\\boxed{\\{1, 2\\}}'), '\\{1, 2\\}');
    assert.equal(lastBoxed('\\boxed 7$'), '7');
    assert.equal(lastBoxed('\\fbox{9}'), '9');
    // Unclosed: not an answer, so an earlier well-formed box is used.
    assert.equal(lastBoxed('\\boxed{3} and \\boxed{4'), '3');
    assert.equal(lastBoxed('\\boxedx{3}'), null);
  });

  test('"Answer:" alone on its line takes the next non-empty line', () => {
    assert.equal(extractAnswer('Answer:\n\n  42  \nbye')?.text, '42');
    assert.equal(extractAnswer('Answer:')?.text, '');
  });

  test('references use their marker, else the whole text', () => {
    assert.deepEqual(referenceAnswer('She has 3+4=7 apples.\n#### 7'), { text: '7', source: 'hash' });
    assert.deepEqual(referenceAnswer('\\frac{3}{4}'), { text: '\\frac{3}{4}', source: 'whole' });
  });
});

describe('parseNumber', () => {
  const cases: Array<[string, bigint, bigint]> = [
    ['24', 24n, 1n], ['-24', -24n, 1n], ['0.75', 3n, 4n], ['3/4', 3n, 4n], ['6/8', 3n, 4n], ['-3/4', -3n, 4n],
    ['3/-4', -3n, 4n], ['1,234', 1234n, 1n], ['1,234,567.5', 2469135n, 2n], ['24.000', 24n, 1n], ['.5', 1n, 2n],
    ['1e3', 1000n, 1n], ['2.5E-1', 1n, 4n], ['0', 0n, 1n], ['-0', 0n, 1n], ['1.5/0.5', 3n, 1n],
    ['123456789012345678901234567890', 123456789012345678901234567890n, 1n],
  ];
  for (const [s, num, den] of cases) {
    test(`${s} = ${num}/${den}`, () => assert.deepEqual(parseNumber(s), { num, den }));
  }
  test('rejects what is not one number', () => {
    for (const s of ['', '-', '.', '1,23', '12,3456', '3/0', '1/2/3', 'abc', '1e999', '24 apples', '--5', '1..2']) {
      assert.equal(parseNumber(s), null, s);
    }
  });
});

describe('parseAnswer', () => {
  test('sets aside units, $, %, "x =" and trailing periods', () => {
    for (const s of ['24', '$24', '\\$24.00', '24 apples', '24 cm.', 'x = 24', 'x=24', '24%', '24\\%', '24^\\circ', '24°', '**24**', '\\text{24 dollars}']) {
      const parsed = parseAnswer(s);
      assert.equal(parsed?.kind, 'number', s);
      assert.ok(parsed.kind === 'number' && rationalEquals(parsed.value, { num: 24n, den: 1n }), s);
    }
  });
  test('several numbers or symbols are compared as text', () => {
    assert.deepEqual(parseAnswer('24 or 25'), { kind: 'text', value: '24or25' });
    assert.deepEqual(parseAnswer('(1, 2)'), { kind: 'text', value: '(1,2)' });
    assert.deepEqual(parseAnswer('2^{10}'), { kind: 'text', value: '2^{10}' });
    assert.deepEqual(parseAnswer('\\dfrac{\\pi}{2}'), { kind: 'text', value: '\\frac{\\pi}{2}' });
    assert.equal(parseAnswer('  '), null);
  });
});

describe('mathReward', () => {
  // [completion, reference, expected]: each group holds matches and the near-misses beside them.
  const cases: Array<[string, string, 0 | 1]> = [
    // Integers and the answer-line forms.
    ['#### 24', '24', 1], ['#### 25', '24', 0], ['#### 240', '24', 0], ['#### 2.4', '24', 0], ['#### -24', '24', 0],
    ['12+7=19,19+5=24\n#### 24', '24', 1], ['12+7=19,19+5=24\n#### 19', '24', 0],
    ['Answer: 24', '24', 1], ['answer:24', '24', 1], ['**Answer:** 24', '24', 1], ['Answer: 23', '24', 0],
    ['so \\boxed{24}.', '24', 1], ['so $\\boxed{24}$', '24', 1], ['so \\boxed{42}', '24', 0],
    // Negatives.
    ['so the result is -5', '-5', 1], ['so the result is 5', '-5', 0], ['12-5', '-5', 0], ['Answer: −5', '-5', 1],
    // Decimals, trailing zeros and periods.
    ['Answer: 24.0', '24', 1], ['Answer: 24.', '24', 1], ['Answer: 24.50', '24.5', 1], ['Answer: 24.05', '24.5', 0],
    ['#### 0.5', '.5', 1], ['#### 0.05', '.5', 0],
    // Fractions against decimals, exactly.
    ['Answer: 3/4', '0.75', 1], ['\\boxed{\\frac{3}{4}}', '0.75', 1], ['\\boxed{\\dfrac{6}{8}}', '3/4', 1], ['Answer: 0.75', '\\frac{3}{4}', 1],
    ['Answer: 3/5', '0.75', 0], ['Answer: 4/3', '3/4', 0], ['\\boxed{0.3333}', '1/3', 0], ['Answer: -3/4', '3/4', 0],
    // Thousands separators.
    ['Answer: 1,234', '1234', 1], ['#### 1234', '1,234', 1], ['It costs 1,234,000 in all', '1234000', 1],
    ['Answer: 1,235', '1234', 0], ['Answer: 1,234', '1.234', 0],
    // Currency and units.
    ['Answer: $1,234.00.', '1234', 1], ['Answer: \\$18', '18', 1], ['#### 18 dollars', '18', 1], ['Answer: 12 cm', '12', 1],
    ['Answer: 50\\%', '50', 1], ['Answer: 50%', '0.5', 0], ['Answer: $19', '18', 0],
    // "x =" forms and references with rationale.
    ['\\boxed{x = 7}', '7', 1], ['Answer: 3+4=7', 'She has 3+4=<<3+4=7>>7 apples.\n#### 7', 1], ['Answer: 3+4=8', '#### 7', 0],
    // Symbolic answers fall back to text.
    ['\\boxed{\\frac{\\pi}{2}}', '\\dfrac{\\pi}{2}', 1], ['\\boxed{\\frac{\\pi}{3}}', '\\frac{\\pi}{2}', 0], ['Answer: (B)', '(b)', 1],
    // No answer, ambiguous answers, broken answer lines.
    ['I do not know', '24', 0], ['Answer:', '24', 0], ['#### ', '24', 0], ['Answer: 24 or 25', '24', 0],
    ['24 is tempting\nAnswer: none', '24', 0], ['\\boxed{24', '24', 1], ['', '24', 0],
    // Without a marker only the last number counts.
    ['first 24 then 25', '24', 0], ['first 25 then 24', '24', 1], ['the answer is pi', 'pi', 0],
  ];
  for (const [completion, reference, expected] of cases) {
    test(`${JSON.stringify(completion)} vs ${JSON.stringify(reference)} -> ${expected}`, () => {
      assert.equal(mathReward(ex(reference), completion), expected);
    });
  }

  test('numeric references work as numbers too', () => {
    assert.equal(isCorrect('#### 7', 7), true);
    assert.equal(isCorrect('#### 0.1', 0.1), true);
    assert.equal(isCorrect('#### 8', 7), false);
  });
});

describe('formatReward', () => {
  test('accepts a final answer line of any form', () => {
    for (const c of ['#### 24', '12+7=19\n#### 24', '#### -3/4', 'Answer: 24', 'work\nAnswer: 1,234.5', 'so\n\\boxed{24}', '$\\boxed{24}$.', '#### 24\n\n  ']) {
      assert.equal(formatReward(ex('0'), c), 1, c);
    }
  });
  test('rejects answers not on the last line, malformed or non-numeric ones', () => {
    for (const c of ['#### 24\nmore text', '24', '####', '#### abc', '#### 24 or 25', 'Answer: x', 'the #### 24', '\\boxed{24} or 25', '']) {
      assert.equal(formatReward(ex('0'), c), 0, c);
    }
  });
  test('a specific marker accepts only its own form', () => {
    const hash = makeFormatReward({ marker: '####' });
    assert.equal(hash(ex('0'), '#### 24'), 1);
    assert.equal(hash(ex('0'), 'Answer: 24'), 0);
    const answer = makeFormatReward({ marker: 'Answer:' });
    assert.equal(answer(ex('0'), 'Answer: 24'), 1);
    assert.equal(answer(ex('0'), '#### 24'), 0);
    assert.throws(() => makeFormatReward({ marker: 'nope' as never }), RangeError);
  });
});

describe('makeLengthPenalty', () => {
  test('zero, then a linear ramp to -1 over the soft zone, then -1', () => {
    const p = makeLengthPenalty({ maxLength: 10, softZone: 4 });
    const at = (n: number) => p(ex('0'), 'x'.repeat(n));
    assert.equal(at(0), 0);
    assert.equal(at(6), 0);
    assert.equal(at(7), -0.25);
    assert.equal(at(9), -0.75);
    assert.equal(at(10), -1);
    assert.equal(at(11), -1);
  });
  test('measures with the given function', () => {
    const p = makeLengthPenalty({ maxLength: 2, softZone: 0, measure: (c) => c.split(' ').length });
    assert.equal(p(ex('0'), 'a b'), 0);
    assert.equal(p(ex('0'), 'a b c'), -1);
  });
  test('rejects bad options', () => {
    assert.throws(() => makeLengthPenalty({ maxLength: 0, softZone: 0 }), /maxLength/);
    assert.throws(() => makeLengthPenalty({ maxLength: 5, softZone: 6 }), /softZone/);
  });
});
