// The training commands as a user runs them (the compiled bin, spawned): train --help and
// its errors, a tiny train run, then eval, sample and compare on it.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { CONFIG_KEYS, OPTIONS } from '../../src/train/config.js';
import { MAIN, cli as run } from './run_cli.js';

const root = mkdtempSync(join(tmpdir(), 'lgrpo-train-cli-'));
after(() => rmSync(root, { recursive: true, force: true }));

const cli = (...args: string[]) => run(args, root);

// A tiny model trained for two steps, shared by the eval and sample tests. A constant
// rate, so that a resumed run may raise --steps.
const RUN = join(root, 'run');
const TINY = ['--sft-steps', '10', '--prompts-per-step', '2', '--group-size', '2', '--max-new-tokens', '8', '--eval-size', '4', '--lr-schedule', 'constant'];
let trained: ReturnType<typeof cli>;
before(() => {
  trained = cli('train', '--steps', '2', '--eval-every', '1', '--out', RUN, ...TINY);
});

test('train --help explains every option', () => {
  const r = cli('train', '--help');
  assert.equal(r.status, 0, r.stderr);
  const help = r.stdout.replace(/\s+/g, ' ');
  for (const key of CONFIG_KEYS) assert.match(help, new RegExp(`--${OPTIONS[key].flag}\\b`), `--${OPTIONS[key].flag}`);
  assert.match(help, /--config\b/);
  assert.match(help, /Ctrl-C/);
});

test('unknown and inconsistent train options are errors', () => {
  const unknown = cli('train', '--frobnicate', '3');
  assert.equal(unknown.status, 1);
  assert.match(unknown.stderr, /unknown option --frobnicate/);
  const inconsistent = cli('train', '--group-size', '4', '--prompts-per-step', '3', '--micro-batch', '5', '--out', join(root, 'never'));
  assert.equal(inconsistent.status, 1);
  assert.match(inconsistent.stderr, /--micro-batch: 5 does not divide/);
  assert.equal(existsSync(join(root, 'never')), false, 'nothing written');
  const missingTask = cli('train', '--task', join(root, 'missing.jsonl'));
  assert.equal(missingTask.status, 1);
  assert.match(missingTask.stderr, /--task: .*missing\.jsonl does not exist/);
  const jsonl = join(root, 'qa.jsonl');
  writeFileSync(jsonl, '{"prompt": "2+2?", "answer": 4}\n{"prompt": "3+3?", "answer": 6}\n');
  const warmupWithoutData = cli('train', '--task', jsonl, '--sft-steps', '5');
  assert.equal(warmupWithoutData.status, 1);
  assert.match(warmupWithoutData.stderr, /--sft-steps: the supervised warm-up needs reference completions/);
  const badChoice = cli('train', '--loss', 'ppo');
  assert.equal(badChoice.status, 1);
  assert.match(badChoice.stderr, /ppo/);
});

test('train: a tiny run ends with a summary, a checkpoint and a report', () => {
  assert.equal(trained.status, 0, trained.stderr);
  assert.match(trained.stdout, /held-out greedy accuracy: \d\.\d{3} at step 0 → \d\.\d{3} at step 2/);
  assert.match(trained.stdout, /λ: /);
  assert.ok(existsSync(join(RUN, 'checkpoint-2', 'model.safetensors')));
  assert.ok(existsSync(join(RUN, 'report.html')));
  assert.match(trained.stderr, /eval @ step 0/);
});

test('eval prints accuracy and mean length of a run, a checkpoint or a model directory', () => {
  const json = cli('eval', '--model', RUN, '--eval-size', '4', '--max-new-tokens', '8', '--json');
  assert.equal(json.status, 0, json.stderr);
  const result = JSON.parse(json.stdout);
  assert.equal(result.examples, 4);
  assert.ok(result.accuracy >= 0 && result.accuracy <= 1);
  assert.ok(result.mean_length >= 1 && result.mean_length <= 8, `mean length ${result.mean_length}`);
  assert.equal(result.model, join(RUN, 'checkpoint-2'));
  // The run's own last eval used the same prompts, weights and greedy decoding.
  const lastEval = readFileSync(join(RUN, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.kind === 'eval').pop();
  assert.equal(result.accuracy, lastEval.accuracy);
  assert.equal(result.mean_length, lastEval.mean_length);

  const text = cli('eval', '--model', join(RUN, 'checkpoint-2'), '--eval-size', '3', '--show', '2');
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /accuracy: +\d\.\d{4}/);
  assert.match(text.stdout, /mean length: +\d+\.\d{2} tokens/);
  assert.equal(text.stdout.split('\n').filter((l) => l.includes(' → ')).length, 2);

  const missing = cli('eval', '--model', join(root, 'nothing-here'));
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /does not exist/);
});

test('sample prints completions of prompts', () => {
  const r = cli('sample', '--model', RUN, '--prompt', '1+2=? (#### n)\\n', '--prompt', '4+5+6=? (#### n)\\n', '--max-new-tokens', '6', '--json');
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.deepEqual(out.results.map((x: { prompt: string }) => x.prompt), ['1+2=? (#### n)\n', '4+5+6=? (#### n)\n']);
  for (const x of out.results) {
    assert.equal(x.completions.length, 1);
    assert.equal(typeof x.completions[0].text, 'string');
    assert.ok(x.completions[0].tokens >= 1 && x.completions[0].tokens <= 6);
  }
  const several = cli('sample', '--model', RUN, '--prompt', '3+4=? (#### n)\\n', '--n', '3', '--temperature', '1', '--seed', '7');
  assert.equal(several.status, 0, several.stderr);
  assert.equal(several.stdout.split('\n').filter((l) => l.startsWith('  "')).length, 3);
  const greedyMany = cli('sample', '--model', RUN, '--prompt', 'x', '--n', '2');
  assert.equal(greedyMany.status, 1);
  assert.match(greedyMany.stderr, /--n: .*--temperature > 0/);
});

test('compare runs each loss on the same seeds from one warm-up per seed, prints intervals and paired differences, writes one report', () => {
  const out = join(root, 'compare');
  const r = cli('compare', '--losses', 'grpo,lambda', '--seeds', '2', '--steps', '2', '--eval-every', '1', '--out', out, ...TINY);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.split('\n');
  assert.match(lines[0], /^loss +seeds +step-0 acc +final acc +final − grpo +best acc +best − grpo +mean length +final λ$/);
  assert.match(r.stdout, /\ngrpo +2 +\d\.\d{3} ± \d\.\d{3} +\d\.\d{3} ± \d\.\d{3} +— +\d\.\d{3} ± \d\.\d{3} +— +[\d.]+ ± [\d.]+ +—/);
  assert.match(r.stdout, /\nlambda +2 .* [+-]\d\.\d{3} ± \d\.\d{3} .* -?\d\.\d{3} ± \d\.\d{3}$/m);
  for (const run of ['grpo-seed0', 'grpo-seed1', 'lambda-seed0', 'lambda-seed1']) assert.ok(existsSync(join(out, run, 'metrics.jsonl')), run);
  // One warm-up per seed, reused by the second loss; progress names the run.
  assert.equal(readdirSync(join(out, 'warmups')).length, 2);
  assert.equal(r.stderr.match(/reused from/g)?.length, 2, r.stderr);
  assert.match(r.stderr, /\[2\/4 lambda seed 0 \| all done in [^\]]+\] step 1\/2/);
  assert.match(r.stderr, /\[4\/4 lambda seed 1 \| all done in \d+s\] step 1\/2/);
  const summary = JSON.parse(readFileSync(join(out, 'compare.json'), 'utf8'));
  assert.deepEqual(summary.rows.map((row: { loss: string }) => row.loss), ['grpo', 'lambda']);
  assert.equal(summary.runs.length, 4);
  // The same seed starts every loss from the same warmed-up model on the same eval set.
  assert.deepEqual(summary.rows[0].startAccuracy, summary.rows[1].startAccuracy);
  assert.equal(summary.rows[1].finalVsBaseline.n, 2);
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  assert.match(html, /<table class="data" id="summary">/);
  assert.match(html, /grpo \(mean of 2 seeds\)/);
  assert.match(html, /lambda \(mean of 2 seeds\)/);
  assert.match(html, /data-plot="lambda"/);
  const bad = cli('compare', '--losses', 'grpo,ppo', '--out', join(root, 'bad'));
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /--losses/);
});

test('Ctrl-C finishes the step, saves a checkpoint and exits; --resume continues', async () => {
  const out = join(root, 'interrupted');
  const child = spawn(process.execPath, [MAIN, 'train', '--steps', '200', '--eval-every', '0', '--save-every', '0', '--out', out, ...TINY], { cwd: root });
  let stderr = '';
  let signalled = false;
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
    if (!signalled && /step +1\/200/.test(stderr)) {
      signalled = true;
      child.kill('SIGINT');
    }
  });
  const status = await new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  assert.equal(status, 130, stderr);
  assert.match(stderr, /interrupted: saved .*checkpoint-(\d+)/);
  const step = Number(/checkpoint-(\d+)/.exec(stderr)![1]);
  assert.ok(step >= 1 && step < 200, `saved at step ${step}`);
  assert.ok(existsSync(join(out, `checkpoint-${step}`, 'trainer_state.json')));
  const resumed = cli('train', '--resume', out, '--steps', String(step + 1));
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.match(resumed.stdout, new RegExp(`steps: ${step + 1}/${step + 1}`));
});
