// The training loop end to end on the tiny model, shrunk to a few steps: what a run
// directory holds (metrics lines with every listed field, checkpoints, samples, report),
// that an interrupted and resumed run writes exactly the metrics of an uninterrupted one,
// that micro-batching leaves a step's loss and gradient unchanged, that a reward which
// throws counts as 0 without stopping the run, that the updates do optimise the reward,
// and the optional paths: dynamic sampling, the KL reference, masking truncated responses,
// a JSONL task.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConfig } from '../../src/train/config.js';
import { readMetrics, type MetricRecord } from '../../src/train/metrics.js';
import { train, DYNAMIC_SAMPLING_MAX_ROUNDS, OPTIMIZER_FILE } from '../../src/train/trainer.js';
import { loadModelDir, tinyModel } from '../../src/train/model.js';
import { saveTokenizer } from '../../src/train/tokenizer.js';

const root = mkdtempSync(join(tmpdir(), 'lgrpo-trainer-'));
after(() => rmSync(root, { recursive: true, force: true }));
let counter = 0;
const freshDir = (label: string) => join(root, `${label}-${++counter}`);

// A reward with spread inside (almost) every group — the fraction of digits in the
// response — so advantages are non-zero and the updates do something even while the tiny
// model cannot add yet.
const DIGIT_REWARD = join(root, 'digits.mjs');
writeFileSync(DIGIT_REWARD, 'export default (example, completion) => completion.length ? (completion.match(/[0-9]/g) ?? []).length / completion.length : 0;\n');
const THROWING_REWARD = join(root, 'throws.mjs');
writeFileSync(THROWING_REWARD, "export default () => { throw new Error('boom from a user reward'); };\n");

/**
 * The CI-sized default configuration: the tiny model, a short warm-up, 2 prompts × 4
 * samples; a constant rate, so that a resumed run may raise --steps.
 */
function tinyArgs(out: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    out, steps: 3, 'sft-steps': 8, 'prompts-per-step': 2, 'group-size': 4, 'max-new-tokens': 10,
    'eval-size': 6, 'eval-every': 2, 'save-every': 2, warmup: 0, lr: 3e-3, 'lr-schedule': 'constant',
    reward: ['math', `${DIGIT_REWARD}=0.5`], ...extra,
  };
}

function quietStream(lines: string[] = []): { write(text: string): boolean; isTTY: boolean } {
  return { write: (text: string) => (lines.push(text), true), isTTY: false };
}

const TRAIN_FIELDS = [
  'loss', 'reward_mean', 'reward_std', 'accuracy', 'advantage_mean', 'advantage_std', 'advantage_abs_mean',
  'clip_frac_low', 'clip_frac_high', 'ratio_mean', 'entropy', 'mean_length', 'truncated_frac', 'degenerate_frac',
  'lambda', 'lambda_grad', 'weight_min', 'weight_max', 'lr', 'grad_norm', 'reward_failures',
  'time_rollout', 'time_score', 'time_train',
];

function withoutTimings(records: MetricRecord[]): Record<string, unknown>[] {
  return records.map((r) => Object.fromEntries(Object.entries(r).filter(([k]) => !k.startsWith('time_'))));
}

test('a tiny run writes metrics with every listed field, checkpoints, samples and a report', async () => {
  const out = freshDir('run');
  const { config } = resolveConfig(tinyArgs(out));
  const result = await train(config, { progress: quietStream() });
  assert.equal(result.step, 3);
  assert.equal(result.interrupted, false);

  const records = readMetrics(join(out, 'metrics.jsonl'));
  const kinds = records.map((r) => `${r.kind}@${r.step}`);
  // The warm-up first (step 0), the step-0 eval after it and before any update, then
  // train lines with evals every 2 steps and at the end.
  assert.ok(records[0].kind === 'warmup' && records[0].step === 0, kinds.join(' '));
  const afterWarmup = kinds.filter((k) => !k.startsWith('warmup'));
  assert.deepEqual(afterWarmup, ['eval@0', 'train@1', 'train@2', 'eval@2', 'train@3', 'eval@3']);
  const warm = records.filter((r) => r.kind === 'warmup');
  assert.equal(warm[warm.length - 1].sft_step, 8);
  for (const w of warm) assert.ok(Number.isFinite(w.loss) && (w.loss as number) > 0, `warm-up loss ${w.loss}`);

  for (const r of records.filter((x) => x.kind === 'train')) {
    for (const field of TRAIN_FIELDS) assert.ok(Number.isFinite(r[field]), `step ${r.step}: ${field} = ${r[field]}`);
    assert.ok((r.accuracy as number) >= 0 && (r.accuracy as number) <= 1);
    assert.ok((r.mean_length as number) >= 1 && (r.mean_length as number) <= 10, `mean_length ${r.mean_length}`);
    assert.ok((r.entropy as number) > 0, 'entropy from the fused kernel');
    assert.ok((r.grad_norm as number) > 0, 'the digit reward gives every step a gradient');
    assert.ok((r.advantage_abs_mean as number) > 0);
    assert.equal(r.reward_failures, 0);
    // One iteration: the policy that sampled is the one trained, so every ratio is 1.
    assert.ok(Math.abs((r.ratio_mean as number) - 1) < 1e-5, `ratio ${r.ratio_mean}`);
    assert.equal(r.clip_frac_low, 0);
    assert.equal(r.kl, undefined, 'no KL field without --beta');
    assert.ok(Number.isFinite(r.reward_digits), 'per-term reward when several are summed');
  }
  for (const r of records.filter((x) => x.kind === 'eval')) {
    assert.ok((r.accuracy as number) >= 0 && (r.accuracy as number) <= 1, `accuracy ${r.accuracy}`);
    assert.ok((r.mean_length as number) >= 1 && (r.mean_length as number) <= 10, `mean_length ${r.mean_length}`);
  }

  // Checkpoints 2 and 3 (save-every 2 and the end), each a loadable model directory.
  const names = readdirSync(out).sort();
  for (const name of ['checkpoint-2', 'checkpoint-3', 'config.json', 'latest', 'metrics.jsonl', 'report.html', 'samples'])
    assert.ok(names.includes(name), `${name} in ${names.join(', ')}`);
  const ckpt = join(out, 'checkpoint-3');
  for (const file of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', OPTIMIZER_FILE, 'trainer_state.json'])
    assert.ok(existsSync(join(ckpt, file)), file);
  const state = JSON.parse(readFileSync(join(ckpt, 'trainer_state.json'), 'utf8'));
  assert.equal(state.step, 3);
  assert.equal(state.lambda, result.lambda);
  assert.deepEqual(state.dataCursor, { epoch: 0, offset: 6 });
  assert.ok(state.rng.sampling.state.length === 4);
  const { policy } = loadModelDir(out);
  policy.dispose();

  assert.deepEqual(readdirSync(join(out, 'samples')).sort(), ['eval-step-000000.jsonl', 'eval-step-000002.jsonl', 'eval-step-000003.jsonl']);
  const sample = readFileSync(join(out, 'samples', 'eval-step-000003.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(sample.length, 6);
  assert.equal(typeof sample[0].completion, 'string');
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  assert.match(html, /<svg/);
  assert.doesNotMatch(html, /<script[^>]+src=/, 'self-contained');
});

test('interrupted after step 2 and resumed, a run writes the metrics of an uninterrupted run', async () => {
  // Two iterations per step (ratios move, clipping acts, old log-probs are reused) and a
  // learned λ, so every piece of state a checkpoint must carry matters.
  const extra = { steps: 4, iterations: 2, 'lambda-lr': 5 };
  const straight = freshDir('straight');
  await train(resolveConfig(tinyArgs(straight, extra)).config, { progress: quietStream() });

  const split = freshDir('split');
  const controller = new AbortController();
  // The progress line of step 2 stands in for Ctrl-C arriving during step 2.
  const stream = { write: (text: string) => (text.startsWith('step 2/') && controller.abort(), true), isTTY: false };
  const first = await train(resolveConfig(tinyArgs(split, extra)).config, { progress: stream, signal: controller.signal });
  assert.equal(first.interrupted, true);
  assert.equal(first.step, 2);
  assert.equal(first.checkpoint, join(split, 'checkpoint-2'));
  const resumed = await train(resolveConfig({ resume: split }).config, { progress: quietStream() });
  assert.equal(resumed.step, 4);

  const a = readMetrics(join(straight, 'metrics.jsonl'));
  const b = readMetrics(join(split, 'metrics.jsonl'));
  assert.deepEqual(withoutTimings(b), withoutTimings(a));
  assert.ok(a.some((r) => r.kind === 'train' && (r.ratio_mean as number) !== 1), 'the second iteration sees ratios ≠ 1');
  assert.ok(a.filter((r) => r.kind === 'train').some((r) => r.lambda !== 0), 'λ moved');
  assert.equal(resumed.lambda, JSON.parse(readFileSync(join(straight, 'checkpoint-4', 'trainer_state.json'), 'utf8')).lambda);
  // The weights too, bit for bit.
  assert.ok(readFileSync(join(split, 'checkpoint-4', 'model.safetensors')).equals(readFileSync(join(straight, 'checkpoint-4', 'model.safetensors'))));
});

test('resuming with a different configuration is refused', async () => {
  const out = freshDir('refuse');
  await train(resolveConfig(tinyArgs(out, { steps: 1 })).config, { progress: quietStream() });
  await assert.rejects(train(resolveConfig({ resume: out, steps: 2, epsilon: 0.3 }).config, { progress: quietStream() }), /different configuration \(--epsilon\)/);
  await assert.rejects(train(resolveConfig({ resume: out }).config, { progress: quietStream() }), /--steps: the checkpoint is at step 1/);
  // A decaying schedule reaches 0 at --steps: more steps would change the rates already used.
  const decaying = freshDir('refuse-cosine');
  await train(resolveConfig(tinyArgs(decaying, { steps: 1, 'lr-schedule': 'cosine', 'sft-steps': 0, 'eval-every': 0 })).config, { progress: quietStream() });
  await assert.rejects(train(resolveConfig({ resume: decaying, steps: 2 }).config, { progress: quietStream() }), /--steps .*--lr-schedule cosine/);
});

test('micro-batches that split groups change neither the loss, ∂L/∂λ nor the gradient of a step (λ ≠ 0)', async () => {
  // λ starts away from 0 so the weights differ from row to row, and micro-batches of 3 cut
  // the groups of 4: a micro-batch computing its own weights or normaliser would show.
  const step1 = async (microBatch: number) => {
    const out = freshDir(`mb${microBatch}`);
    await train(resolveConfig(tinyArgs(out, { steps: 1, 'micro-batch': microBatch, 'eval-every': 0, 'prompts-per-step': 3, 'lambda-init': 0.8 })).config, { progress: quietStream() });
    return readMetrics(join(out, 'metrics.jsonl')).find((r) => r.kind === 'train')!;
  };
  const whole = await step1(12);
  const pieces = await step1(3);
  for (const key of ['loss', 'grad_norm', 'lambda_grad', 'lambda', 'entropy', 'weight_min', 'weight_max']) {
    const x = whole[key] as number, y = pieces[key] as number;
    assert.ok(Number.isFinite(x) && Math.abs(x - y) <= 1e-4 * Math.abs(x) + 1e-7, `${key}: ${x} (one micro-batch) vs ${y} (four)`);
  }
  assert.ok((whole.grad_norm as number) > 0);
  assert.ok(Math.abs(whole.lambda_grad as number) > 1e-6, `λ has a gradient: ${whole.lambda_grad}`);
  assert.ok((whole.weight_max as number) - (whole.weight_min as number) > 1e-3, `the weights differ: ${whole.weight_min}..${whole.weight_max}`);
});

test('a cached warm-up is reused, and the run is the one that computes it', async () => {
  const cache = freshDir('warmups');
  const args = { steps: 2, 'eval-every': 2 };
  const first = await train(resolveConfig(tinyArgs(freshDir('cache-a'), { ...args, loss: 'grpo' })).config, { progress: quietStream(), warmupCache: cache });
  assert.equal(first.warmup?.cached, undefined, 'computed the first time');
  assert.equal(readdirSync(cache).length, 1);
  const lines: string[] = [];
  const reused = freshDir('cache-b');
  const second = await train(resolveConfig(tinyArgs(reused, { ...args, loss: 'lambda' })).config, { progress: quietStream(lines), warmupCache: cache });
  assert.equal(second.warmup?.cached, true);
  assert.match(lines.join(''), /reused from/);
  const computed = freshDir('cache-c');
  await train(resolveConfig(tinyArgs(computed, { ...args, loss: 'lambda' })).config, { progress: quietStream() });
  assert.deepEqual(withoutTimings(readMetrics(join(reused, 'metrics.jsonl'))), withoutTimings(readMetrics(join(computed, 'metrics.jsonl'))));
  // Same seed, same warmed-up weights: the losses start from the same held-out accuracy.
  assert.equal(first.evals[0].accuracy, second.evals[0].accuracy);
  // Another seed is another warm-up.
  const other = await train(resolveConfig(tinyArgs(freshDir('cache-d'), { ...args, seed: 1 })).config, { progress: quietStream(), warmupCache: cache });
  assert.equal(other.warmup?.cached, undefined);
  assert.equal(readdirSync(cache).length, 2);
});

test('a reward module that throws counts as 0 and the run goes on', async () => {
  const out = freshDir('throws');
  const lines: string[] = [];
  const { config } = resolveConfig(tinyArgs(out, { steps: 2, reward: [`${DIGIT_REWARD}`, THROWING_REWARD] }));
  const result = await train(config, { progress: quietStream(lines) });
  assert.equal(result.step, 2);
  const trainLines = readMetrics(join(out, 'metrics.jsonl')).filter((r) => r.kind === 'train');
  assert.equal(trainLines.length, 2);
  for (const r of trainLines) {
    assert.equal(r.reward_failures, 8, 'every completion of the step');
    assert.equal(r.reward_throws, 0, 'the failing term counts 0');
    assert.ok(Number.isFinite(r.loss) && (r.grad_norm as number) > 0, 'the other term still trains');
  }
  const log = lines.join('');
  assert.match(log, /boom from a user reward/);
  assert.match(log, /counted as 0/);
});

test('the updates optimise the reward: rewarding digits makes the responses digits', async () => {
  // Every random response has some digits and some not, so no group is degenerate and the
  // signal is there from the first step.
  const out = freshDir('digits');
  const { config } = resolveConfig({
    out, steps: 10, 'sft-steps': 0, 'prompts-per-step': 4, 'group-size': 8, 'max-new-tokens': 8, 'eval-every': 0,
    warmup: 0, lr: 1e-2, 'lr-schedule': 'constant', reward: [DIGIT_REWARD],
  });
  await train(config, { progress: quietStream() });
  const reward = readMetrics(join(out, 'metrics.jsonl')).filter((r) => r.kind === 'train').map((r) => r.reward_mean as number);
  const early = (reward[0] + reward[1]) / 2, late = (reward[8] + reward[9]) / 2;
  assert.ok(early < 0.3 && late > 0.7, `digit fraction ${early.toFixed(2)} at the start, ${late.toFixed(2)} at the end: ${reward.map((x) => x.toFixed(2)).join(' ')}`);
});

test('dynamic sampling drops groups whose rewards are all equal and refills the step, within a bound', async () => {
  // Rewards of 0 or 1 by parity of the length: some groups agree, some do not.
  const parity = join(root, 'parity.mjs');
  writeFileSync(parity, 'export default (example, completion) => completion.length % 2;\n');
  const out = freshDir('dynamic');
  const { config } = resolveConfig(tinyArgs(out, { steps: 3, 'dynamic-sampling': true, reward: [parity], 'group-size': 2, 'eval-every': 0 }));
  await train(config, { progress: quietStream() });
  for (const r of readMetrics(join(out, 'metrics.jsonl')).filter((x) => x.kind === 'train')) {
    const sampled = r.groups_sampled as number, trained = r.groups_trained as number;
    assert.ok(sampled >= 2 && sampled <= 2 * DYNAMIC_SAMPLING_MAX_ROUNDS, `sampled ${sampled}`);
    assert.ok(trained >= 1 && trained <= 2, `trained ${trained}`);
    // The kept groups are exactly the informative ones (or, when none turned up, the last
    // round as sampled, every group degenerate).
    if (r.degenerate_frac !== 1) assert.ok(Math.abs((r.degenerate_frac as number) - (sampled - trained) / sampled) < 1e-12, JSON.stringify(r));
  }
  // A constant reward: nothing informative within the bound; the step still runs on the last round.
  const constant = join(root, 'constant.mjs');
  writeFileSync(constant, 'export default () => 1;\n');
  const flat = freshDir('dynamic-flat');
  await train(resolveConfig(tinyArgs(flat, { steps: 1, 'dynamic-sampling': true, reward: [constant], 'eval-every': 0 })).config, { progress: quietStream() });
  const r = readMetrics(join(flat, 'metrics.jsonl')).find((x) => x.kind === 'train')!;
  assert.equal(r.groups_sampled, 2 + (DYNAMIC_SAMPLING_MAX_ROUNDS - 1) * 2);
  assert.equal(r.groups_trained, 2);
  assert.equal(r.degenerate_frac, 1);
  assert.equal(r.advantage_abs_mean, 0);
  assert.equal(r.grad_norm, 0);
});

test('β > 0: KL to the frozen step-0 policy is logged, and the reference survives a resume', async () => {
  const args = { beta: 0.5, steps: 3, 'eval-every': 0, 'save-every': 1 };
  const out = freshDir('kl');
  await train(resolveConfig(tinyArgs(out, { ...args, steps: 2 })).config, { progress: quietStream() });
  assert.ok(existsSync(join(out, 'reference', 'model.safetensors')));
  await train(resolveConfig({ resume: out, steps: 3 }).config, { progress: quietStream() });
  const straight = freshDir('kl-straight');
  await train(resolveConfig(tinyArgs(straight, args)).config, { progress: quietStream() });
  const kl = readMetrics(join(out, 'metrics.jsonl')).filter((r) => r.kind === 'train').map((r) => r.kl as number);
  assert.equal(kl.length, 3);
  // Step 1 trains the reference itself (the two log-prob paths agree to rounding); then it drifts.
  assert.ok(kl[0] >= 0 && kl[0] < 1e-5, `kl at step 1: ${kl[0]}`);
  assert.ok(kl[1] > 10 * kl[0] && kl[2] > 0, `kl ${kl.join(', ')}`);
  assert.deepEqual(withoutTimings(readMetrics(join(out, 'metrics.jsonl'))), withoutTimings(readMetrics(join(straight, 'metrics.jsonl'))));
});

test('β > 0 with a --model directory and a warm-up: the reference is the warmed-up policy, saved with the run for resumes', async () => {
  // A model directory that is not the tiny built-in: the warm-up changes it, so the
  // reference (the policy at step 0) is no longer what the directory holds.
  const modelDir = join(root, 'model-dir');
  const { policy, tokenizer } = tinyModel(11);
  policy.save(modelDir);
  saveTokenizer(tokenizer, modelDir);
  policy.dispose();
  const args = { model: modelDir, beta: 0.5, steps: 3, 'sft-steps': 8, 'eval-every': 0, 'save-every': 1 };
  const out = freshDir('kl-dir');
  await train(resolveConfig(tinyArgs(out, { ...args, steps: 2 })).config, { progress: quietStream() });
  assert.ok(existsSync(join(out, 'reference', 'model.safetensors')), 'the warmed-up reference is saved with the run');
  await train(resolveConfig({ resume: out, steps: 3 }).config, { progress: quietStream() });
  const straight = freshDir('kl-dir-straight');
  await train(resolveConfig(tinyArgs(straight, args)).config, { progress: quietStream() });
  const kl = readMetrics(join(straight, 'metrics.jsonl')).filter((r) => r.kind === 'train').map((r) => r.kl as number);
  assert.ok(kl[0] < 1e-5, `step 1 trains the reference itself: kl ${kl[0]}`);
  assert.deepEqual(withoutTimings(readMetrics(join(out, 'metrics.jsonl'))), withoutTimings(readMetrics(join(straight, 'metrics.jsonl'))));
  // Without a warm-up the directory is the reference: nothing is copied.
  const plain = freshDir('kl-dir-plain');
  await train(resolveConfig(tinyArgs(plain, { ...args, steps: 1, 'sft-steps': 0 })).config, { progress: quietStream() });
  assert.ok(!existsSync(join(plain, 'reference')));
});

test('--mask-truncated leaves cut responses out of the loss, and truncation is warned about', async () => {
  const lines: string[] = [];
  const out = freshDir('truncated');
  // Two new tokens: the untrained model almost never ends that soon.
  await train(resolveConfig(tinyArgs(out, { steps: 1, 'sft-steps': 0, 'max-new-tokens': 2, 'mask-truncated': true, 'eval-every': 0 })).config,
    { progress: quietStream(lines) });
  const r = readMetrics(join(out, 'metrics.jsonl')).find((x) => x.kind === 'train')!;
  assert.ok((r.truncated_frac as number) > 0.5, `truncated ${r.truncated_frac}`);
  if (r.truncated_frac === 1) {
    assert.equal(r.loss, 0);
    assert.equal(r.grad_norm, 0);
    assert.equal(r.entropy, undefined, 'no token in the loss');
  }
  assert.match(lines.join(''), /hit --max-new-tokens 2 without an end token \(masked out of the loss\)/);
});

test('a JSONL task trains and evaluates on its own split', async () => {
  const file = join(root, 'sums.jsonl');
  const lines = [];
  for (let a = 1; a <= 6; a++) for (let b = 1; b <= 5; b++) lines.push(JSON.stringify({ question: `${a}+${b}=?\n`, answer: a + b }));
  writeFileSync(file, lines.join('\n') + '\n');
  const out = freshDir('jsonl');
  const { config } = resolveConfig(tinyArgs(out, { task: file, steps: 2, 'sft-steps': 0, 'eval-every': 1, reward: ['math', `${DIGIT_REWARD}=0.1`], 'prompts-per-step': 4 }));
  const result = await train(config, { progress: quietStream() });
  assert.equal(result.step, 2);
  const records = readMetrics(join(out, 'metrics.jsonl'));
  assert.deepEqual(records.map((r) => `${r.kind}@${r.step}`), ['eval@0', 'train@1', 'eval@1', 'train@2', 'eval@2']);
  const state = JSON.parse(readFileSync(join(out, 'checkpoint-2', 'trainer_state.json'), 'utf8'));
  // 30 examples, 3 held out: 27 train; 8 prompts consumed.
  assert.deepEqual(state.dataCursor, { epoch: 0, offset: 8 });
  const evalSamples = readFileSync(join(out, 'samples', 'eval-step-000000.jsonl'), 'utf8').trim().split('\n');
  assert.equal(evalSamples.length, 3);
});
