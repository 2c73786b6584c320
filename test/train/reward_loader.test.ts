// User reward modules: how they are found in a module (default, named `reward`, CommonJS),
// the errors for files that cannot be used, and scoreAll's contract — a reward that throws or
// returns a non-number costs that completion its reward (0) and a warning, never the run.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join, relative } from 'node:path';
import { loadRewardModule, resolveReward, scoreAll, BUILTIN_REWARDS, type RewardWarning } from '../../src/train/rewards/loader.js';
import type { Example } from '../../src/train/tasks/types.js';

const dir = mkdtempSync(join(tmpdir(), 'lgrpo-reward-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function write(name: string, source: string): string {
  const path = join(dir, name);
  writeFileSync(path, source);
  return path;
}

const examples: Example[] = [
  { prompt: 'first prompt', answer: '1' },
  { prompt: 'second prompt', answer: '2' },
  { prompt: 'third prompt', answer: '3', level: 'hard' },
];
const completions = ['#### 1', '#### 5', '#### 3'];

describe('loadRewardModule', () => {
  test('default export', async () => {
    const fn = await loadRewardModule(write('default.mjs', 'export default (ex, c) => c.length;'));
    assert.equal(fn(examples[0], 'abcd'), 4);
  });

  test('named export `reward`, receiving extra example fields', async () => {
    const fn = await loadRewardModule(write('named.js', 'export function reward(ex, c) { return ex.level === "hard" ? 2 : 1; }\nexport const other = 3;'));
    assert.equal(fn(examples[2], ''), 2);
    assert.equal(fn(examples[0], ''), 1);
  });

  test('the default export wins over `reward`', async () => {
    const fn = await loadRewardModule(write('both.mjs', 'export default () => 1;\nexport const reward = () => 2;'));
    assert.equal(fn(examples[0], ''), 1);
  });

  test('CommonJS: module.exports = fn and exports.reward = fn', async () => {
    const a = await loadRewardModule(write('a.cjs', 'module.exports = (ex, c) => c === ex.answer ? 1 : 0;'));
    assert.equal(a(examples[0], '1'), 1);
    const b = await loadRewardModule(write('b.cjs', 'exports.reward = () => 0.25;'));
    assert.equal(b(examples[0], ''), 0.25);
  });

  test('a relative path resolves against the working directory', async () => {
    const rel = relative(process.cwd(), write('relative.mjs', 'export default () => 7;'));
    assert.ok(!isAbsolute(rel));
    const fn = await loadRewardModule(rel);
    assert.equal(fn(examples[0], ''), 7);
  });

  test('no function exported: the error lists what is exported', async () => {
    const path = write('missing.mjs', 'export const score = 1;\nexport const name = "x";');
    await assert.rejects(loadRewardModule(path), (err: Error) => {
      assert.ok(err instanceof TypeError);
      assert.match(err.message, /default export or as an export named "reward"/);
      assert.match(err.message, /score \(1\)/);
      assert.ok(err.message.includes(path));
      return true;
    });
    await assert.rejects(loadRewardModule(write('empty.mjs', '')), /no exports/);
    await assert.rejects(loadRewardModule(write('notfn.mjs', 'export default 42;')), /default \(42\)/);
  });

  test('a TypeScript path says Node 20 cannot import it and to compile it first', async () => {
    const path = write('reward.ts', 'export default (): number => 1;');
    await assert.rejects(loadRewardModule(path), /Node 20 cannot import TypeScript.*compile it to JavaScript first/);
    await assert.rejects(loadRewardModule(join(dir, 'nonexistent.mts')), /Node 20 cannot import TypeScript/);
  });

  test('missing files, wrong extensions and broken modules name the file', async () => {
    await assert.rejects(loadRewardModule(join(dir, 'nope.js')), /nope\.js: file not found/);
    await assert.rejects(loadRewardModule(write('data.json', '{}')), /expected a \.js, \.mjs or \.cjs file, got "\.json"/);
    await assert.rejects(loadRewardModule(write('broken.mjs', 'export default (=>;')), /broken\.mjs: failed to import/);
    await assert.rejects(loadRewardModule(write('throws.mjs', 'throw new Error("top-level boom");')), /top-level boom/);
  });
});

describe('resolveReward', () => {
  test('built-ins by name, modules by path', async () => {
    const math = await resolveReward('math', 2);
    assert.equal(math.name, 'math');
    assert.equal(math.weight, 2);
    assert.equal(math.fn, BUILTIN_REWARDS.math);
    const mod = await resolveReward(write('mine.mjs', 'export default () => 1;'));
    assert.equal(mod.name, 'mine.mjs');
    assert.equal(mod.weight, 1);
  });
  test('an unknown name is neither built-in nor a path', async () => {
    await assert.rejects(resolveReward('accuracy'), /not a built-in reward \(math, format\)/);
    await assert.rejects(resolveReward('math', NaN), /weight/);
  });
});

describe('scoreAll', () => {
  test('weighted sum of built-in and user rewards, components kept raw', async () => {
    const lengthy = await resolveReward(write('len.mjs', 'export default (ex, c) => c.length;'), 0.5);
    const math = await resolveReward('math', 2);
    const r = await scoreAll([math, lengthy], examples, completions);
    assert.deepEqual([...r.components.math], [1, 0, 1]);
    assert.deepEqual([...r.components['len.mjs']], [6, 6, 6]);
    assert.deepEqual([...r.total], [2 + 3, 0 + 3, 2 + 3]);
    assert.equal(r.failures, 0);
  });

  test('async rewards are awaited, results in batch order whatever order they settle', async () => {
    const fn = await loadRewardModule(write('async.mjs', `
      export default async (ex, c) => {
        await new Promise((r) => setTimeout(r, 10 * (3 - Number(ex.answer))));
        return Number(ex.answer) * 10;
      };`));
    const r = await scoreAll([fn], examples, completions);
    assert.deepEqual([...r.total], [10, 20, 30]);
  });

  test('throwing and non-number results count as 0 with a warning naming the example', async () => {
    const bad = await loadRewardModule(write('bad.mjs', `
      export default async (ex, c) => {
        if (ex.answer === '1') throw new Error('judge unavailable');
        if (ex.answer === '2') return NaN;
        return 'high';
      };`));
    const warnings: RewardWarning[] = [];
    const r = await scoreAll([{ name: 'bad', fn: bad, weight: 1 }, { name: 'one', fn: () => 1, weight: 0.5 }], examples, completions, {
      onWarning: (w) => warnings.push(w),
    });
    assert.deepEqual([...r.components.bad], [0, 0, 0]);
    assert.deepEqual([...r.total], [0.5, 0.5, 0.5]);
    assert.equal(r.failures, 3);
    assert.equal(warnings.length, 3);
    assert.deepEqual(warnings.map((w) => w.index), [0, 1, 2]);
    assert.match(warnings[0].message, /reward "bad" threw Error: judge unavailable for completion 0 of example "first prompt"; counted as 0/);
    assert.match(warnings[1].message, /returned NaN instead of a finite number for completion 1 of example "second prompt"/);
    assert.match(warnings[2].message, /returned a string "high" instead of a finite number .*"third prompt"/);
    assert.equal((warnings[0].error as Error).message, 'judge unavailable');
    assert.equal(warnings[2].value, 'high');
    assert.equal(warnings[2].example, examples[2]);
    assert.equal(warnings[2].completion, '#### 3');
  });

  test('synchronous throws, Infinity, undefined, booleans and objects are failures too', async () => {
    const values: unknown[] = [Infinity, undefined, true];
    const fns = [
      (_e: Example, _c: string) => { throw new RangeError('sync'); },
      (_e: Example, c: string) => values[completions.indexOf(c)] as number,
      () => ({ score: 1 }) as unknown as number,
    ];
    const warnings: string[] = [];
    const r = await scoreAll(fns, examples, completions, { onWarning: (w) => warnings.push(w.message) });
    assert.deepEqual([...r.total], [0, 0, 0]);
    assert.equal(r.failures, 9);
    assert.ok(warnings.some((m) => /reward0" threw RangeError: sync/.test(m)));
    assert.ok(warnings.some((m) => /reward1" returned Infinity/.test(m)));
    assert.ok(warnings.some((m) => /reward1" returned undefined/.test(m)));
    assert.ok(warnings.some((m) => /reward1" returned boolean/.test(m)));
    assert.ok(warnings.some((m) => /reward2" returned an object/.test(m)));
  });

  test('without a warning callback the run still goes on', async () => {
    const r = await scoreAll([() => { throw new Error('x'); }, () => 2], examples, completions);
    assert.deepEqual([...r.total], [2, 2, 2]);
    assert.equal(r.failures, 3);
  });

  test('repeated names are numbered so their metrics stay apart', async () => {
    const r = await scoreAll([{ name: 'm', fn: () => 1, weight: 1 }, { name: 'm', fn: () => 2, weight: 1 }], examples, completions);
    assert.deepEqual(Object.keys(r.components), ['m', 'm#2']);
    assert.deepEqual([...r.total], [3, 3, 3]);
  });

  test('argument errors', async () => {
    await assert.rejects(scoreAll([() => 1], examples, completions.slice(1)), /completions: expected one per example \(3\), got 2/);
    await assert.rejects(scoreAll([], examples, completions), /at least one reward/);
    await assert.rejects(scoreAll([{ name: 'w', fn: () => 1, weight: Infinity }], examples, completions), /weight must be finite/);
  });
});
