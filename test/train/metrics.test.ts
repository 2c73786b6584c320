// metrics.jsonl: lines reach the file as they are written, read back as written, and a
// run resumed from step N (after a crash at any point) ends with the same file as an
// uninterrupted run.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MetricsWriter, METRICS_FILE, readMetrics, type MetricRecord } from '../../src/train/metrics.js';
import { Rng } from '../../src/train/rng.js';

const root = mkdtempSync(join(tmpdir(), 'lgrpo-train-metrics-'));
after(() => rmSync(root, { recursive: true, force: true }));
let counter = 0;
function freshPath(): string {
  const dir = join(root, `run-${++counter}`);
  mkdirSync(dir);
  return join(dir, METRICS_FILE);
}

/** The lines a run of `steps` steps logs, evaluating every `evalEvery` (values from a seeded stream). */
function runLines(steps: number, evalEvery: number, seed: number): MetricRecord[] {
  const rng = new Rng(seed);
  const lines: MetricRecord[] = [{ kind: 'eval', step: 0, accuracy: rng.next(), mean_length: 3 }];
  for (let step = 1; step <= steps; step++) {
    lines.push({ kind: 'train', step, loss: rng.next() - 0.5, reward_mean: rng.next(), lambda: step * 0.01, time_rollout: rng.next() });
    if (step % evalEvery === 0) lines.push({ kind: 'eval', step, accuracy: rng.next(), mean_length: 2 + rng.next() });
  }
  return lines;
}

test('lines are written one per record, kind and step first, and are on disk before close', () => {
  const path = freshPath();
  const w = MetricsWriter.open(path);
  w.write({ step: 1, loss: 0.5, kind: 'train', note: 'x', nested: { a: [1, 2] } });
  // A crash now (no close) must not lose the line: it is in the file already.
  assert.equal(readFileSync(path, 'utf8'), '{"kind":"train","step":1,"loss":0.5,"note":"x","nested":{"a":[1,2]}}\n');
  w.write({ kind: 'eval', step: 1, accuracy: Number.NaN, mean_length: Infinity });
  w.close();
  assert.deepEqual(readMetrics(path), [
    { kind: 'train', step: 1, loss: 0.5, note: 'x', nested: { a: [1, 2] } },
    { kind: 'eval', step: 1, accuracy: null, mean_length: null },
  ]);
  assert.throws(() => w.write({ kind: 'train', step: 2 }), /closed/);
});

test('bad records are refused: unknown kind, non-integer step, a step going back', () => {
  const w = MetricsWriter.open(freshPath(), { fsync: false });
  assert.throws(() => w.write({ kind: 'bogus' as 'train', step: 1 }), /kind/);
  assert.throws(() => w.write({ kind: 'train', step: 1.5 }), /step/);
  w.write({ kind: 'train', step: 3 });
  w.write({ kind: 'eval', step: 3 });
  assert.throws(() => w.write({ kind: 'train', step: 2 }), /step.*before the last logged step 3/);
  w.close();
});

test('a new run never appends to an existing run\'s metrics', () => {
  const path = freshPath();
  const w = MetricsWriter.open(path);
  w.write({ kind: 'train', step: 1 });
  w.close();
  assert.throws(() => MetricsWriter.open(path), /already holds metrics/);
  writeFileSync(path, '');
  MetricsWriter.open(path).close(); // empty is fine
});

test('resume: lines after the checkpoint step are dropped, so the file equals an uninterrupted run\'s', () => {
  const steps = 23;
  const evalEvery = 5;
  const lines = runLines(steps, evalEvery, 11);

  const reference = freshPath();
  const ref = MetricsWriter.open(reference);
  for (const l of lines) ref.write(l);
  ref.close();
  const expected = readFileSync(reference, 'utf8');

  for (const [crashAfterLine, checkpointStep] of [[lines.length - 1, 20], [9, 5], [4, 0], [17, 10]]) {
    const path = freshPath();
    const first = MetricsWriter.open(path);
    for (const l of lines.slice(0, crashAfterLine)) first.write(l);
    // The crash: no close(), and half of the next line made it to the file.
    appendFileSync(path, JSON.stringify(lines[crashAfterLine]).slice(0, 17));
    const second = MetricsWriter.open(path, { resumeStep: checkpointStep });
    assert.ok(readMetrics(path).every((r) => r.step <= checkpointStep));
    assert.equal(second.lastStep, lines.filter((l) => l.step <= checkpointStep).at(-1)?.step);
    for (const l of lines.filter((l) => l.step > checkpointStep)) second.write(l);
    second.close();
    assert.equal(readFileSync(path, 'utf8'), expected, `crash after line ${crashAfterLine}, resumed from step ${checkpointStep}`);
  }

  // Resuming a run with no metrics file yet starts one.
  const fresh = freshPath();
  const w = MetricsWriter.open(fresh, { resumeStep: 7 });
  w.write({ kind: 'train', step: 8 });
  w.close();
  assert.deepEqual(readMetrics(fresh), [{ kind: 'train', step: 8 }]);
  assert.throws(() => MetricsWriter.open(fresh, { resumeStep: -1 }), /resumeStep/);
});

test('reading: a half-written last line is ignored, a bad line elsewhere is an error naming it', () => {
  const path = freshPath();
  writeFileSync(path, '{"kind":"train","step":1,"loss":1}\n\n{"kind":"train","step":2,"loss":0.5}\n{"kind":"tr');
  assert.deepEqual(readMetrics(path).map((r) => r.step), [1, 2]);
  writeFileSync(path, '{"kind":"train","step":1}\nnot json\n{"kind":"train","step":2}\n');
  assert.throws(() => readMetrics(path), new RegExp(`${METRICS_FILE}:2: not valid JSON`));
  assert.throws(() => MetricsWriter.open(path, { resumeStep: 1 }), /:2: not valid JSON/);
  writeFileSync(path, '{"kind":"train","step":2}\n{"kind":"train","step":1}\n');
  assert.throws(() => readMetrics(path), /:2: step 1 after step 2/);
  writeFileSync(path, '{"kind":"train"}\n');
  assert.throws(() => readMetrics(path), /:1: step/);
  assert.throws(() => readMetrics(join(root, 'nope.jsonl')), /cannot read/);
  assert.deepEqual(readMetrics(join(root, 'nope.jsonl'), { allowMissing: true }), []);
});
