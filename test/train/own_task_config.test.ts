// A user's own task in the train options: held-out files and fractions, the warm-up data
// (a JSONL task's "solution"/"completion" field or --sft-data), the warnings a run that
// cannot measure or learn anything draws, and a run's config.json reused as --config.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ConfigError, DEFAULT_SFT_LR_PRETRAINED, DEFAULT_SFT_LR_TINY, DEFAULT_SFT_STEPS, DEFAULT_SFT_STEPS_OWN_DATA, MIN_USEFUL_EVAL_SIZE,
  resolveConfig, writeRunConfig,
} from '../../src/train/config.js';
import { warmupData, warmupStream } from '../../src/train/sft.js';
import { jsonlTask } from '../../src/train/tasks/jsonl.js';

const root = mkdtempSync(join(tmpdir(), 'lgrpo-own-task-'));
after(() => rmSync(root, { recursive: true, force: true }));
let counter = 0;
function freshDir(): string {
  const dir = join(root, `case-${++counter}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** n problems "a+b=?" with answers, and a solution field when `solutions`. */
function writeTask(path: string, n: number, solutions: boolean, offset = 0): string {
  const lines = Array.from({ length: n }, (_, i) => {
    const a = i + offset, b = 2 * i + 1;
    return JSON.stringify({ prompt: `${a}+${b}=?\n`, answer: a + b, ...(solutions ? { solution: `${a}+${b}=${a + b}\n#### ${a + b}` } : {}) });
  });
  writeFileSync(path, lines.join('\n') + '\n');
  return path;
}

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${(e as Error).stack}`);
    return e.problems;
  }
  return assert.fail('expected a ConfigError');
}

test('--eval-file and --eval-fraction choose the held-out problems of a JSONL task', () => {
  const cwd = freshDir();
  writeTask(join(cwd, 'train.jsonl'), 40, false);
  writeTask(join(cwd, 'held.jsonl'), 30, false, 100);
  const { config, warnings } = resolveConfig({ task: 'train.jsonl', 'eval-file': 'held.jsonl', 'sft-steps': 0 }, undefined, { cwd });
  assert.equal(config.evalFile, join(cwd, 'held.jsonl'));
  const task = jsonlTask(config.task, { evalPath: config.evalFile!, evalFraction: config.evalFraction });
  assert.equal(task.trainSize, 40);
  assert.equal(task.evalSet().length, 30);
  assert.ok(!warnings.some((w) => w.startsWith('--eval-fraction')), warnings.join('\n'));

  const half = resolveConfig({ task: 'train.jsonl', 'eval-fraction': 0.5 }, undefined, { cwd }).config;
  assert.equal(half.evalFraction, 0.5);
  assert.equal(jsonlTask(half.task, { evalFraction: half.evalFraction }).evalSet().length, 20);

  assert.ok(problems(() => resolveConfig({ task: 'train.jsonl', 'eval-fraction': 1 }, undefined, { cwd })).some((p) => p.startsWith('--eval-fraction: expected a number in [0, 0.9]')));
  assert.ok(problems(() => resolveConfig({ task: 'train.jsonl', 'eval-file': 'nope.jsonl' }, undefined, { cwd })).some((p) => p.startsWith('--eval-file:') && p.includes('does not exist')));
  assert.ok(problems(() => resolveConfig({ 'eval-file': 'held.jsonl' }, undefined, { cwd })).some((p) => p.startsWith('--eval-file: only a JSONL --task')));
  writeFileSync(join(cwd, 'bad.jsonl'), '{"prompt": "x"}\n');
  assert.ok(problems(() => resolveConfig({ task: 'train.jsonl', 'eval-file': 'bad.jsonl' }, undefined, { cwd })).some((p) => p.startsWith('--eval-file:') && p.includes('missing "answer"')));
  // A malformed task file is a config problem, said before any run directory exists.
  assert.ok(problems(() => resolveConfig({ task: 'bad.jsonl' }, undefined, { cwd })).some((p) => p.startsWith('--task:') && p.includes('bad.jsonl:1: missing "answer"')));
});

test('a held-out set too small to measure a gain draws a warning that says how coarse it is', () => {
  const cwd = freshDir();
  writeTask(join(cwd, 'eight.jsonl'), 8, true);
  const { warnings } = resolveConfig({ task: 'eight.jsonl' }, undefined, { cwd });
  const w = warnings.find((x) => x.startsWith('--eval-fraction:'));
  assert.ok(w, warnings.join('\n'));
  assert.match(w, /only 1 held-out problem \(10% of eight.jsonl\): one problem moves accuracy by 1\.00/);
  assert.match(w, new RegExp(`at least ${MIN_USEFUL_EVAL_SIZE}`));
  writeTask(join(cwd, 'many.jsonl'), 400, true);
  assert.ok(!resolveConfig({ task: 'many.jsonl' }, undefined, { cwd }).warnings.some((x) => x.startsWith('--eval-fraction')));
  // No evaluation at all: nothing to warn about.
  assert.ok(!resolveConfig({ task: 'eight.jsonl', 'eval-every': 0 }, undefined, { cwd }).warnings.some((x) => x.startsWith('--eval-fraction')));
  const none = resolveConfig({ task: 'eight.jsonl', 'eval-fraction': 0 }, undefined, { cwd }).warnings;
  assert.ok(none.some((x) => /holds nothing out/.test(x)), none.join('\n'));
});

test('the warm-up: the task\'s own solutions or --sft-data; the tiny model without one draws a loud warning', () => {
  const cwd = freshDir();
  writeTask(join(cwd, 'solved.jsonl'), 20, true);
  writeTask(join(cwd, 'bare.jsonl'), 20, false);
  writeFileSync(join(cwd, 'sft.jsonl'), '{"question": "1+2=?\\n", "completion": "#### 3"}\n{"prompt": "2+2=?\\n", "solution": 4}\n');

  const arith = resolveConfig({}, undefined, { cwd }).config;
  assert.equal(arith.sftSteps, DEFAULT_SFT_STEPS);
  assert.equal(arith.sftLr, DEFAULT_SFT_LR_TINY);

  const solved = resolveConfig({ task: 'solved.jsonl' }, undefined, { cwd });
  assert.equal(solved.config.sftSteps, DEFAULT_SFT_STEPS_OWN_DATA);
  assert.ok(!solved.warnings.some((w) => /random weights/.test(w)), solved.warnings.join('\n'));
  const task = jsonlTask(solved.config.task, { evalFraction: solved.config.evalFraction });
  const pairs = warmupData(solved.config, task)!;
  // Only the training split's solutions: never a held-out problem's.
  assert.equal(pairs.length, task.trainSize);
  const held = new Set(task.evalSet().map((e) => e.prompt));
  assert.ok(pairs.every((p) => !held.has(p.prompt)));
  assert.match(pairs[0].completion, /^\d+\+\d+=\d+\n#### \d+$/);
  // Epochs in a seeded order: every pair once per epoch.
  const stream = warmupStream(pairs, 3 * pairs.length, 7);
  for (let e = 0; e < 3; e++) assert.equal(new Set(stream.slice(e * pairs.length, (e + 1) * pairs.length).map((p) => p.prompt)).size, pairs.length);
  assert.deepEqual(warmupStream(pairs, 10, 7), warmupStream(pairs, 10, 7));

  const bare = resolveConfig({ task: 'bare.jsonl' }, undefined, { cwd });
  assert.equal(bare.config.sftSteps, 0);
  const loud = bare.warnings.find((w) => /random weights/.test(w));
  assert.ok(loud, bare.warnings.join('\n'));
  assert.match(loud, /--model tiny starts from random weights .*bare\.jsonl has no "solution" or "completion" field.*accuracy stays at 0.*--model runs\/<run>/);
  assert.ok(problems(() => resolveConfig({ task: 'bare.jsonl', 'sft-steps': 10 }, undefined, { cwd }))
    .some((p) => p.startsWith('--sft-steps: the supervised warm-up needs reference completions: give the lines of bare.jsonl a "solution"')));

  const withData = resolveConfig({ task: 'bare.jsonl', 'sft-data': 'sft.jsonl' }, undefined, { cwd }).config;
  assert.equal(withData.sftSteps, DEFAULT_SFT_STEPS_OWN_DATA);
  assert.deepEqual(warmupData(withData, jsonlTask(withData.task)), [
    { prompt: '1+2=?\n', completion: '#### 3' },
    { prompt: '2+2=?\n', completion: '4' },
  ]);
  writeFileSync(join(cwd, 'nocomp.jsonl'), '{"prompt": "1+2=?"}\n');
  assert.ok(problems(() => resolveConfig({ task: 'bare.jsonl', 'sft-data': 'nocomp.jsonl' }, undefined, { cwd }))
    .some((p) => p.startsWith('--sft-data:') && p.includes('no "completion" (or "solution") field')));

  // A model directory: no warm-up unless asked, and a fine-tuning rate when asked.
  mkdirSync(join(cwd, 'hf'));
  const hf = resolveConfig({ task: 'solved.jsonl', model: 'hf', 'sft-steps': 5 }, undefined, { cwd }).config;
  assert.equal(hf.sftLr, DEFAULT_SFT_LR_PRETRAINED);
  assert.equal(resolveConfig({ task: 'solved.jsonl', model: 'hf' }, undefined, { cwd }).config.sftSteps, 0);
  assert.ok(!resolveConfig({ task: 'bare.jsonl', model: 'hf' }, undefined, { cwd }).warnings.some((w) => /random weights/.test(w)));
  // --sft-steps 0 on the tiny model is allowed, and warned about.
  assert.ok(resolveConfig({ 'sft-steps': 0 }, undefined, { cwd }).warnings.some((w) => /random weights and gets no supervised warm-up \(--sft-steps 0\)/.test(w)));
});

test("a run's config.json works as --config as it is: its out, resume and restart are not reused", () => {
  const cwd = freshDir();
  writeTask(join(cwd, 'solved.jsonl'), 30, true);
  const first = resolveConfig({ task: 'solved.jsonl', out: 'runs/first', steps: 7, 'eval-fraction': 0.2 }, undefined, { cwd }).config;
  mkdirSync(first.out, { recursive: true });
  const path = writeRunConfig(first.out, first);
  writeFileSync(join(first.out, 'metrics.jsonl'), '');
  const again = resolveConfig({ config: path }, undefined, { cwd, now: new Date(Date.UTC(2026, 0, 2, 3, 4, 5)) }).config;
  assert.notEqual(again.out, first.out);
  assert.equal(again.out, join(cwd, 'runs', 'solved-lambda-20260102-030405'));
  assert.equal(again.resume, null);
  assert.equal(again.steps, 7);
  assert.equal(again.task, first.task);
  assert.equal(again.evalFraction, 0.2);
  // A flag still overrides it, and --out still works.
  assert.equal(resolveConfig({ config: path, out: 'runs/second' }, undefined, { cwd }).config.out, join(cwd, 'runs', 'second'));
});
