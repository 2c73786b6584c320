// Progress output: plain lines when stderr is not a terminal, one redrawn line when it is;
// ETA from this process's pace; eval summaries on their own lines.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Progress, formatDuration } from '../../src/train/progress.js';

function sink(isTTY: boolean, columns = 80) {
  const chunks: string[] = [];
  return { chunks, stream: { isTTY, columns, write: (t: string) => chunks.push(t) } };
}

test('formatDuration', () => {
  assert.equal(formatDuration(7.4), '7s');
  assert.equal(formatDuration(192), '3m12s');
  assert.equal(formatDuration(3725), '1h02m');
  assert.equal(formatDuration(Number.NaN), '?');
});

test('not a terminal: one plain line per update, no control characters', () => {
  let now = 0;
  const { chunks, stream } = sink(false);
  const p = new Progress({ total: 10, stream, now: () => now });
  now = 2000;
  p.update(1, { reward: 0.25, accuracy: 0.5, meanLength: 4.25, lambda: 0.0123 });
  now = 4000;
  p.update(2, { reward: 0.5 });
  p.eval(2, { accuracy: 0.4, meanLength: 3 });
  p.done();
  assert.equal(chunks.length, 3);
  assert.ok(chunks.every((c) => c.endsWith('\n') && !/[\r\x1b]/.test(c)));
  assert.equal(chunks[0], 'step  1/10  reward 0.25  acc 0.5  len 4.3  λ 0.0123  eta 18s\n');
  assert.equal(chunks[1], 'step  2/10  reward 0.5  eta 16s\n');
  assert.equal(chunks[2], 'eval @ step 2: accuracy 0.4 (best 0.4), mean length 3\n');
});

test('terminal: the status line is redrawn in place, never wider than the terminal; messages go above it', () => {
  let now = 0;
  const { chunks, stream } = sink(true, 60);
  // Resumed at step 50: the ETA counts this process's steps only.
  const p = new Progress({ total: 100, startStep: 50, stream, now: () => now });
  now = 10_000;
  p.update(60, { reward: 0.9, lambda: -0.5 });
  assert.equal(chunks.length, 1);
  assert.ok(chunks[0].startsWith('\r\x1b[2K'));
  assert.ok(!chunks[0].includes('\n'));
  assert.ok(chunks[0].length - 5 <= 59, `width ${chunks[0].length - 5}`);
  assert.match(chunks[0], /step  60\/100/);
  assert.match(chunks[0], /eta 40s/);
  p.eval(60, { accuracy: 0.7 });
  assert.equal(chunks[1], '\r\x1b[2K');
  assert.equal(chunks[2], 'eval @ step 60: accuracy 0.7 (best 0.7)\n');
  assert.ok(chunks[3].startsWith('\r\x1b[2K') && chunks[3].includes('eval 0.7'), 'status redrawn with the eval accuracy');
  now = 40_000;
  p.update(100, {});
  assert.match(chunks.at(-1)!, /took 40s/);
  p.done();
  assert.equal(chunks.at(-1), '\n');
  assert.throws(() => new Progress({ total: 5, startStep: 6, stream }), /startStep/);
});

test('a label goes before every line, read afresh each time', () => {
  const { chunks, stream } = sink(false);
  let runs = 3;
  const p = new Progress({ total: 2, stream, now: () => 0, label: () => `[run ${runs}]` });
  p.update(1, { reward: 1 });
  runs = 4;
  p.log('a message');
  assert.match(chunks[0], /^\[run 3\] step 1\/2 /);
  assert.equal(chunks[1], '[run 4] a message\n');
});
