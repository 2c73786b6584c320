// JSONL tasks: accepted record shapes, errors that point at the line, and a split and a
// training stream that are deterministic, disjoint and cover the data once per epoch.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseJsonl, loadJsonl, splitExamples, jsonlTask } from '../../src/train/tasks/jsonl.js';

const dir = mkdtempSync(join(tmpdir(), 'lgrpo-jsonl-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function write(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

const records = (n: number) => Array.from({ length: n }, (_, i) => JSON.stringify({ question: `q${i}?`, answer: i, id: i })).join('\n');

describe('parseJsonl', () => {
  test('prompt or question, string or number answers, extra fields kept', () => {
    const text = '\uFEFF{"prompt": "2+2=", "answer": "4"}\r\n\n  \n{"question": "3*3?", "answer": 9, "level": 2}\n';
    assert.deepEqual(parseJsonl(text), [
      { prompt: '2+2=', answer: '4' },
      { question: '3*3?', prompt: '3*3?', answer: '9', level: 2 },
    ]);
    // prompt wins when both are present.
    assert.equal(parseJsonl('{"prompt": "a", "question": "b", "answer": "1"}')[0].prompt, 'a');
  });

  test('bad lines are reported together, each with its line number', () => {
    const text = [
      '{"prompt": "ok", "answer": "1"}',
      '{"prompt": "broken", ',
      '[1, 2]',
      '{"answer": "1"}',
      '{"prompt": "", "answer": "1"}',
      '{"question": 5, "answer": "1"}',
      '{"prompt": "no answer"}',
      '{"prompt": "null answer", "answer": null}',
      '{"prompt": "blank answer", "answer": "  "}',
      '42',
    ].join('\n');
    assert.throws(() => parseJsonl(text, 'data.jsonl'), (err: Error) => {
      assert.ok(err instanceof SyntaxError);
      const m = err.message;
      assert.match(m, /^data\.jsonl: 9 bad lines:/);
      assert.match(m, /data\.jsonl:2: invalid JSON/);
      assert.match(m, /data\.jsonl:3: expected a JSON object, got an array/);
      assert.match(m, /data\.jsonl:4: missing "prompt" \(or "question"\) field/);
      assert.match(m, /data\.jsonl:5: "prompt" must be a non-empty string, got ""/);
      assert.match(m, /data\.jsonl:6: "question" must be a non-empty string, got 5/);
      assert.match(m, /data\.jsonl:7: missing "answer" field/);
      assert.match(m, /data\.jsonl:8: "answer" must be a non-empty string or a finite number, got null/);
      assert.match(m, /data\.jsonl:9: "answer" must be/);
      assert.match(m, /data\.jsonl:10: expected a JSON object, got 42/);
      assert.doesNotMatch(m, /data\.jsonl:1:/);
      return true;
    });
  });

  test('many bad lines are summarised', () => {
    const text = Array.from({ length: 25 }, () => 'nope').join('\n');
    assert.throws(() => parseJsonl(text, 'x'), /25 bad lines:[\s\S]*x:10: [\s\S]*… and 15 more$/);
  });

  test('empty files and missing files', () => {
    assert.throws(() => parseJsonl('\n  \n', 'empty.jsonl'), /empty\.jsonl: no examples/);
    assert.throws(() => loadJsonl(join(dir, 'missing.jsonl')), /task file .*missing\.jsonl: ENOENT/);
  });
});

describe('splits and the training stream', () => {
  const path = write('data.jsonl', records(50));

  test('the split is disjoint, deterministic and the requested size', () => {
    const all = loadJsonl(path);
    const a = splitExamples(all, 0.1);
    assert.equal(a.eval.length, 5);
    assert.equal(a.train.length, 45);
    const evalPrompts = new Set(a.eval.map((e) => e.prompt));
    assert.ok(a.train.every((e) => !evalPrompts.has(e.prompt)));
    // The held-out set depends on the prompts, not the file order.
    const b = splitExamples([...all].reverse(), 0.1);
    assert.deepEqual(new Set(b.eval.map((e) => e.prompt)), evalPrompts);
    assert.equal(splitExamples(all.slice(0, 3), 0.01).eval.length, 1, 'at least one held out');
    assert.equal(splitExamples(all.slice(0, 1), 0.5).eval.length, 0, 'never all of them');
    assert.equal(splitExamples(all, 0).eval.length, 0);
    assert.throws(() => splitExamples(all, 1), /evalFraction/);
  });

  test('each epoch visits every training example once, in a seed-dependent order', () => {
    const task = jsonlTask(path, { seed: 4 });
    assert.equal(task.trainSize, 45);
    const epoch0 = Array.from({ length: 45 }, (_, i) => task.trainExample(i).prompt);
    const epoch1 = Array.from({ length: 45 }, (_, i) => task.trainExample(45 + i).prompt);
    assert.equal(new Set(epoch0).size, 45);
    assert.deepEqual(new Set(epoch1), new Set(epoch0));
    assert.notDeepEqual(epoch1, epoch0);
    const held = new Set(task.evalSet().map((e) => e.prompt));
    assert.equal(held.size, 5);
    assert.ok(epoch0.every((p) => !held.has(p)));
    // Random access matches sequential access (resume from any cursor), and the seed matters.
    assert.equal(jsonlTask(path, { seed: 4 }).trainExample(60).prompt, epoch1[15]);
    const other = Array.from({ length: 45 }, (_, i) => jsonlTask(path, { seed: 5 }).trainExample(i).prompt);
    assert.notDeepEqual(other, epoch0);
    assert.equal(task.evalSet(2).length, 2);
  });

  test('a separate evaluation file', () => {
    const evalPath = write('eval.jsonl', '{"prompt": "held?", "answer": "1"}\n');
    const task = jsonlTask(path, { evalPath });
    assert.equal(task.trainSize, 50);
    assert.deepEqual(task.evalSet(), [{ prompt: 'held?', answer: '1' }]);
  });
});
