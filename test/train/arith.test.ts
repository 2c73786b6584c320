// The built-in arithmetic task: reproducible from a seed, evaluation problems never seen in
// training (for any seed), reference completions that are right by an independent check and
// by the math reward, both completion forms present, and nothing the tiny tokenizer can't encode.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  trainExample, sftExamples, evalSet, arithTask, isEvalProblem, arithPrompt, stepCompletion, shortCompletion,
  maxCompletionChars, maxPromptChars, resolveArithOptions, makeProblem, ARITH_ALPHABET, ARITH_DEFAULTS,
} from '../../src/train/tasks/arith.js';
import { mathReward } from '../../src/train/rewards/math.js';
import { formatReward } from '../../src/train/rewards/format.js';
import { loadTokenizer } from '../../src/train/tokenizer.js';

const key = (terms: number[]) => terms.join('+');

// Checks a step-by-step completion by reading it, not by regenerating it: every step adds the
// previous running total (or the first term) to the next term, correctly.
function checkSteps(terms: number[], completion: string): void {
  const [stepLine, answerLine] = completion.split('\n');
  const steps = stepLine.split(',');
  assert.equal(steps.length, terms.length - 1, completion);
  let acc = terms[0];
  steps.forEach((step, i) => {
    const m = /^(\d+)\+(\d+)=(\d+)$/.exec(step);
    assert.ok(m, `malformed step ${step}`);
    assert.equal(Number(m[1]), acc);
    assert.equal(Number(m[2]), terms[i + 1]);
    assert.equal(Number(m[3]), Number(m[1]) + Number(m[2]));
    acc = Number(m[3]);
  });
  assert.equal(answerLine, `#### ${terms.reduce((a, b) => a + b, 0)}`);
}

describe('problems and completions', () => {
  test('format of prompt and both completion forms', () => {
    assert.equal(arithPrompt([12, 7, 5]), '12+7+5=? (#### n)\n');
    assert.equal(shortCompletion([12, 7, 5]), '#### 24');
    assert.equal(stepCompletion([12, 7, 5]), '12+7=19,19+5=24\n#### 24');
    assert.equal(stepCompletion([3, 4]), '3+4=7\n#### 7');
    assert.deepEqual(makeProblem([12, 7, 5]), { prompt: '12+7+5=? (#### n)\n', answer: '24', terms: [12, 7, 5], total: 24 });
  });

  test('prompts stay within 24 characters and completions are short', () => {
    assert.ok(maxPromptChars() <= 24, `max prompt ${maxPromptChars()}`);
    assert.equal(maxCompletionChars(), '19+19=38,38+19=57,57+19=76\n#### 76'.length);
    for (let i = 0; i < 500; i++) assert.ok(trainExample(1, i).prompt.length <= maxPromptChars());
  });

  test('option validation', () => {
    assert.throws(() => resolveArithOptions({ minTerms: 1 }), /minTerms\/maxTerms/);
    assert.throws(() => resolveArithOptions({ minTerms: 3, maxTerms: 2 }), /minTerms\/maxTerms/);
    assert.throws(() => resolveArithOptions({ minOperand: 5, maxOperand: 4 }), /minOperand\/maxOperand/);
    assert.throws(() => resolveArithOptions({ maxOperand: 1.5 }), /maxOperand/);
    assert.throws(() => resolveArithOptions({ evalFraction: 0 }), /evalFraction/);
    assert.throws(() => trainExample(1.5, 0), /seed/);
    assert.throws(() => trainExample(0, -1), /index/);
    assert.throws(() => sftExamples(4, 0, { stepFraction: 2 }), /stepFraction/);
  });
});

describe('determinism', () => {
  test('the training stream is a function of (seed, index)', () => {
    const a = Array.from({ length: 200 }, (_, i) => trainExample(7, i));
    const b = Array.from({ length: 200 }, (_, i) => trainExample(7, 199 - i)).reverse();
    assert.deepEqual(a, b);
    const c = Array.from({ length: 200 }, (_, i) => trainExample(8, i));
    const same = a.filter((e, i) => e.prompt === c[i].prompt).length;
    assert.ok(same < 20, `seeds 7 and 8 agree on ${same} of 200 problems`);
  });

  test('sft examples and eval set are reproducible; the task object follows its seed', () => {
    assert.deepEqual(sftExamples(100, 3), sftExamples(100, 3));
    assert.notDeepEqual(sftExamples(100, 3), sftExamples(100, 4));
    assert.deepEqual(evalSet(150), evalSet(150));
    assert.deepEqual(evalSet(150).slice(0, 50), evalSet(50));
    const task = arithTask({ seed: 11 });
    assert.deepEqual(task.trainExample(42), trainExample(11, 42));
    assert.deepEqual(task.evalSet(), evalSet(200));
    assert.equal(task.trainSize, null);
  });

  test('the stream covers every term count and operand in range', () => {
    const counts = new Map<number, number>();
    const operands = new Set<number>();
    for (let i = 0; i < 3000; i++) {
      const { terms } = trainExample(0, i);
      counts.set(terms.length, (counts.get(terms.length) ?? 0) + 1);
      for (const t of terms) operands.add(t);
    }
    assert.deepEqual([...counts.keys()].sort(), [2, 3, 4]);
    for (const c of counts.values()) assert.ok(c > 700, `term counts ${[...counts]}`);
    assert.deepEqual([...operands].sort((x, y) => x - y), Array.from({ length: 19 }, (_, i) => i + 1));
  });
});

describe('splits', () => {
  test('no training or warm-up problem of any seed is an evaluation problem', () => {
    const held = new Set(evalSet(300).map((p) => key(p.terms)));
    assert.equal(held.size, 300, 'evaluation problems are distinct');
    for (const seed of [0, 1, 2, 12345, -3]) {
      for (let i = 0; i < 1000; i++) {
        const p = trainExample(seed, i);
        assert.ok(!held.has(key(p.terms)), `seed ${seed} index ${i}: ${p.prompt}`);
        assert.ok(!isEvalProblem(p.terms));
      }
    }
    for (const p of sftExamples(1000, 5)) assert.ok(!held.has(key(p.terms)));
    for (const p of evalSet(300)) assert.ok(isEvalProblem(p.terms));
  });

  test('about evalFraction of all problems are held out', () => {
    // Every three-term problem: the hash partition should hold out close to 10 %.
    let held = 0;
    let total = 0;
    for (let a = 1; a <= 19; a++) for (let b = 1; b <= 19; b++) for (let c = 1; c <= 19; c++) {
      total++;
      if (isEvalProblem([a, b, c])) held++;
    }
    const fraction = held / total;
    assert.ok(fraction > 0.08 && fraction < 0.12, `held-out fraction ${fraction}`);
    let wider = 0;
    for (let a = 1; a <= 19; a++) for (let b = 1; b <= 19; b++) for (let c = 1; c <= 19; c++) {
      if (isEvalProblem([a, b, c], { evalFraction: 0.3 })) wider++;
    }
    assert.ok(wider / total > 0.27 && wider / total < 0.33);
  });

  test('asking for more evaluation problems than exist fails clearly', () => {
    assert.throws(() => evalSet(50, { minTerms: 2, maxTerms: 2, minOperand: 1, maxOperand: 5 }), /distinct evaluation problems/);
  });
});

describe('reference completions', () => {
  const examples = sftExamples(600, 9);

  test('are correct by an independent reading and by the math and format rewards', () => {
    for (const e of examples) {
      assert.equal(e.answer, String(e.terms.reduce((a, b) => a + b, 0)));
      if (e.form === 'steps') checkSteps(e.terms, e.completion);
      else assert.equal(e.completion, `#### ${e.answer}`);
      assert.equal(mathReward(e, e.completion), 1, e.completion);
      assert.equal(formatReward(e, e.completion), 1, e.completion);
      // A wrong final answer is caught by the same reward.
      const wrong = e.completion.replace(/#### (\d+)$/, (_, n) => `#### ${Number(n) + 1}`);
      assert.equal(mathReward(e, wrong), 0, wrong);
    }
  });

  test('mix short and step-by-step forms, and the step form is longer', () => {
    const steps = examples.filter((e) => e.form === 'steps');
    const short = examples.filter((e) => e.form === 'short');
    assert.ok(steps.length > 240 && short.length > 240, `${steps.length} steps, ${short.length} short`);
    const mean = (xs: typeof examples) => xs.reduce((s, e) => s + e.completion.length, 0) / xs.length;
    assert.ok(mean(steps) > 2 * mean(short), `mean lengths ${mean(steps)} vs ${mean(short)}`);
    assert.ok(sftExamples(50, 1, { stepFraction: 0 }).every((e) => e.form === 'short'));
    assert.ok(sftExamples(50, 1, { stepFraction: 1 }).every((e) => e.form === 'steps'));
  });
});

describe('tiny tokenizer coverage', () => {
  test('every character of prompts and completions is a known single token', () => {
    const tok = loadTokenizer('tiny');
    for (const ch of ARITH_ALPHABET) {
      const ids = tok.encode(ch, { strict: true });
      assert.equal(ids.length, 1, JSON.stringify(ch));
      assert.notEqual(ids[0], tok.unkId);
    }
    for (const e of sftExamples(300, 2)) {
      const text = e.prompt + e.completion;
      for (const ch of text) assert.ok(ARITH_ALPHABET.includes(ch), JSON.stringify(ch));
      const ids = tok.encode(text, { strict: true });
      assert.equal(ids.length, text.length);
      assert.equal(tok.decode(ids), text);
    }
    assert.ok(maxCompletionChars(ARITH_DEFAULTS) + 1 <= 64);
  });
});
