// `train --recompute` keeps one layer's activations and recomputes the rest in backward:
// the same deterministic ops on the same inputs, so the run's metrics must be the run
// without it, to the bit.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { cli } from './run_cli.js';

const root = mkdtempSync(join(tmpdir(), 'lgrpo-train-recompute-'));
after(() => rmSync(root, { recursive: true, force: true }));

const RUN = ['train', '--steps', '2', '--sft-steps', '2', '--prompts-per-step', '2', '--group-size', '4', '--max-new-tokens', '10',
  '--eval-size', '4', '--eval-every', '2', '--loss', 'lambda', '--seed', '3'];

test('train --recompute gives the metrics of the run without it, bit for bit', () => {
  const runs = [[], ['--recompute']].map((extra, i) => {
    const r = cli([...RUN, ...extra, '--out', join(root, `r${i}`)]);
    assert.equal(r.status, 0, r.stderr);
    return readFileSync(join(root, `r${i}`, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  });
  const timing = /second|time|ms$|PerS|elapsed|eta/i;
  const strip = (rows: Record<string, unknown>[]) => rows.map((r) => Object.fromEntries(Object.entries(r).filter(([k]) => !timing.test(k))));
  assert.ok(runs[0].some((r) => r.kind === 'train'), 'the run trained');
  assert.deepEqual(strip(runs[1]), strip(runs[0]));
  assert.equal(JSON.parse(readFileSync(join(root, 'r1', 'config.json'), 'utf8')).recompute, true);
});
