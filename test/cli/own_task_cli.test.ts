// A user's own JSONL task from the command line: the warm-up on its "solution" field with
// its progress line, the loud warning when there is nothing to warm up on, the held-out
// flags, eval reusing the run's task, and the run's config.json passed back as --config.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { cli as run } from './run_cli.js';

const root = mkdtempSync(join(tmpdir(), 'lgrpo-own-task-cli-'));
after(() => rmSync(root, { recursive: true, force: true }));
const cli = (...args: string[]) => run(args, root);
// The README example's runs take 20–40 s on 2 loaded cores; a full suite in parallel can double that.
const slowCli = (...args: string[]) => run(args, root, 600_000);

function writeTask(name: string, n: number, solutions: boolean): string {
  const path = join(root, name);
  writeFileSync(path, Array.from({ length: n }, (_, i) => JSON.stringify({
    question: `What is ${i}+${i % 7}?`, answer: i + (i % 7), ...(solutions ? { solution: `${i}+${i % 7}=${i + (i % 7)}\n#### ${i + (i % 7)}` } : {}),
  })).join('\n') + '\n');
  return path;
}

const EXAMPLE = fileURLToPath(new URL('../../../examples/own-task/', import.meta.url));
const readJsonl = (path: string) => readFileSync(path, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const evalAccuracies = (dir: string) => readJsonl(join(dir, 'metrics.jsonl')).filter((m) => m.kind === 'eval').map((m) => [m.step, m.accuracy]);

const SMALL = ['--prompts-per-step', '2', '--group-size', '2', '--max-new-tokens', '8', '--lr-schedule', 'constant'];

test('train --task own.jsonl: the warm-up learns its solutions, with a progress line; eval reuses the run\'s task', () => {
  writeTask('own.jsonl', 20, true);
  const out = join(root, 'own-run');
  const r = cli('train', '--task', 'own.jsonl', '--eval-fraction', '0.25', '--sft-steps', '30', '--steps', '2', '--eval-every', '2', '--out', out, ...SMALL);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /^run directory: /m);
  assert.match(r.stderr, /supervised warm-up: 30 steps on 15 reference completions/);
  // Off a terminal the progress bar is a line every 25 warm-up steps and at the last, with loss and ETA.
  assert.match(r.stderr, /^warm-up 25\/30 {2}loss [\d.]+ {2}eta \d+s$/m);
  assert.match(r.stderr, /^warm-up 30\/30 {2}loss [\d.]+ {2}took \d+s$/m);
  assert.doesNotMatch(r.stderr, /random weights/);
  assert.match(r.stdout, /supervised warm-up: 30 steps, [\d.]+ s, final loss [\d.]+/);
  const warm = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((m) => m.kind === 'warmup');
  assert.deepEqual(warm.map((m) => m.sft_step), [25, 30]);
  // 5 held out of 20: too few to measure a gain, and said so.
  assert.match(r.stderr, /warning: --eval-fraction: only 5 held-out problems \(25% of own\.jsonl\): one problem moves accuracy by 0\.20/);

  const ev = cli('eval', '--model', out, '--json');
  assert.equal(ev.status, 0, ev.stderr);
  const e = JSON.parse(ev.stdout);
  assert.equal(e.task, join(root, 'own.jsonl'));
  assert.equal(e.examples, 5);
  assert.equal(e.settings.max_new_tokens, 8);
  const tooMany = cli('eval', '--model', out, '--eval-size', '50');
  assert.equal(tooMany.status, 1);
  assert.match(tooMany.stderr, /--eval-size: asked for 50 held-out problems, but own\.jsonl holds out 5 of its problems \(--eval-fraction 0\.25\); give --eval-size 5 or less/);

  // The run's config.json as --config: a new run, in a new directory, with the same settings.
  const again = cli('train', '--config', join(out, 'config.json'), '--steps', '1', '--sft-steps', '0', '--eval-every', '0', '--out', join(root, 'again'));
  assert.equal(again.status, 0, again.stderr);
  const cfg = JSON.parse(readFileSync(join(root, 'again', 'config.json'), 'utf8'));
  assert.equal(cfg['eval-fraction'], 0.25);
  assert.equal(cfg['prompts-per-step'], 2);
});

test('train --task bare.jsonl on the tiny model: a loud warning, and validation errors before any run directory', () => {
  writeTask('bare.jsonl', 30, false);
  const r = cli('train', '--task', 'bare.jsonl', '--steps', '1', '--eval-every', '0', '--out', join(root, 'bare-run'), ...SMALL);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /warning: --model tiny starts from random weights and gets no supervised warm-up \(bare\.jsonl has no "solution" or "completion" field, and no --sft-data was given\): RL from an untrained model finds no reward/);
  const bad = cli('train', '--task', 'bare.jsonl', '--sft-steps', '5', '--out', join(root, 'never'));
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /--sft-steps: the supervised warm-up needs reference completions: give the lines of bare\.jsonl a "solution"/);
  assert.doesNotMatch(bad.stderr, /run directory/);
  assert.ok(!existsSync(join(root, 'never')));
});

test('--keep-best keeps the best evaluation\'s weights (step 0 counts) beside the checkpoints; the summary names the best', () => {
  const out = join(root, 'best-run');
  const r = cli('train', '--steps', '3', '--eval-every', '1', '--keep-best', '--keep-checkpoints', '1', '--save-every', '1', '--sft-steps', '20', '--eval-size', '6', '--out', out, ...SMALL);
  assert.equal(r.status, 0, r.stderr);
  const evals = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((m) => m.kind === 'eval');
  assert.deepEqual(evals.map((e) => e.step), [0, 1, 2, 3]);
  // The first evaluation with the highest accuracy (a later tie does not replace it).
  let best = evals[0];
  for (const e of evals) if (e.accuracy > best.accuracy) best = e;
  const saved = JSON.parse(readFileSync(join(out, 'best', 'best.json'), 'utf8'));
  assert.deepEqual(saved, { step: best.step, accuracy: best.accuracy });
  assert.match(r.stdout, new RegExp(`best held-out accuracy: ${best.accuracy.toFixed(3)} at step ${best.step} \\(weights in .*best\\)`));
  // Rotation keeps one checkpoint; the best stays, and evaluates to what the run measured, on the run's settings.
  assert.ok(existsSync(join(out, 'checkpoint-3')) && !existsSync(join(out, 'checkpoint-2')));
  const ev = cli('eval', '--model', join(out, 'best'), '--json');
  assert.equal(ev.status, 0, ev.stderr);
  const e = JSON.parse(ev.stdout);
  assert.equal(e.settings.from, 'run');
  assert.equal(e.examples, 6);
  assert.equal(e.accuracy, best.accuracy);
});

test('eval --eval-size beyond the built-in task\'s held-out problems says how many there are', () => {
  const out = join(root, 'own-run');  // trained by the first test
  const r = cli('eval', '--model', out, '--task', 'arith', '--eval-size', '100000');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^lgrpo-native: --eval-size: asked for 100000 held-out problems, but the built-in arith task has \d+; give --eval-size \d+ or less$/m);
});

// The README's "Your own task" example, as written there: 20 lines of "Code 37859621. Repeat it."
// with solutions, 100 other codes held out. Measured (seeds 0–3; the AVX2 and AVX-512 paths give
// the same bits): 0 held-out codes right from random weights; 0.70–0.95 after the default warm-up,
// as the tiny model learns to copy 8 digits rather than the 20 answers; then RL with the 0/1 math
// reward on 20 solved prompts adds nothing reliable, while a shorter warm-up and 120 RL steps with
// the per-digit reward of digits.mjs gained on each of seeds 0–5 (+0.03 to +0.22; seed 1, tested:
// 0.49 → 0.71). Runs are deterministic for a seed on one build (checked on both SIMD paths); the
// bars leave 9–12 problems of slack under the measured numbers.
const TASK = join(EXAMPLE, 'codes.jsonl'), HELD_OUT = join(EXAMPLE, 'codes-held-out.jsonl');
const COMMON = ['--task', TASK, '--eval-file', HELD_OUT, '--max-new-tokens', '12'];

test('README example: a 20-line task with solutions, from random weights to held-out codes copied by the warm-up', () => {
  const train = readJsonl(TASK), held = readJsonl(HELD_OUT);
  assert.equal(train.length, 20);
  assert.ok(train.every((e) => typeof e.solution === 'string'));
  // Held out means unseen: no held-out code is a training code.
  const seen = new Set(train.map((e) => e.answer));
  assert.ok(held.length === 100 && held.every((e) => !seen.has(e.answer)));

  const untrained = join(root, 'codes-untrained');
  const u = cli('train', ...COMMON, '--sft-steps', '0', '--steps', '1', '--eval-every', '1', '--out', untrained);
  assert.equal(u.status, 0, u.stderr);
  assert.match(u.stderr, /random weights/);
  assert.deepEqual(evalAccuracies(untrained)[0], [0, 0]);

  const out = join(root, 'codes-run');
  const r = slowCli('train', ...COMMON, '--steps', '10', '--eval-every', '10', '--out', out);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /supervised warm-up: 200 steps, [\d.]+ s, final loss 0\.00\d+/);
  const evals = evalAccuracies(out);
  assert.deepEqual(evals.map(([step]) => step), [0, 10]);
  for (const [step, accuracy] of evals) assert.ok(accuracy >= 0.6, `held-out accuracy ${accuracy} at step ${step}: expected >= 0.6 (0 untrained)`);
  // The right answers are copies of the held-out prompts' codes, not training answers.
  const right = readJsonl(join(out, 'samples', 'eval-step-000010.jsonl')).filter((s) => s.correct);
  assert.ok(right.length >= 60 && right.every((s) => s.prompt.includes(s.completion.trim()) && !seen.has(s.completion.trim())));
});

test('README example: a short warm-up leaves RL room, and the per-digit reward gains on held-out codes', () => {
  const out = join(root, 'codes-rl');
  const r = slowCli('train', ...COMMON, '--sft-steps', '60', '--reward', join(EXAMPLE, 'digits.mjs'), '--steps', '120', '--eval-every', '40', '--seed', '1', '--out', out);
  assert.equal(r.status, 0, r.stderr);
  const evals = evalAccuracies(out);
  assert.deepEqual(evals.map(([step]) => step), [0, 40, 80, 120]);
  const [first, last] = [evals[0][1], evals[evals.length - 1][1]];
  assert.match(r.stdout, new RegExp(`held-out greedy accuracy: ${first.toFixed(3)} at step 0 → ${last.toFixed(3)} at step 120`));
  // Room to learn: the warm-up left about half the held-out codes wrong (0.49 measured) ...
  assert.ok(first > 0.2 && first < 0.7, `held-out accuracy after the warm-up: ${first}`);
  // ... and RL on the 20 training prompts alone took held-out accuracy up (0.49 → 0.71 measured).
  assert.ok(last >= first + 0.1, `held-out accuracy ${first} at step 0 → ${last} at step 120: expected a gain of 0.1 or more`);
});
