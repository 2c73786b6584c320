// The thread pool: resizing between jobs must neither crash nor change any bits
// (kernels split work statically, so results do not depend on the thread count).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { setNumThreads } from '../src/index.js';
import { rmsNormForward } from '../src/ops/rms_norm.js';
import { rng } from './helpers.js';

describe('thread pool', () => {
  it('resizes after jobs have run and gives the same bits at every size', () => {
    const r = rng('parallel');
    const dim = 67, rows = 301;
    const x = r.normals(rows * dim), w = r.normals(dim);
    const first = rmsNormForward(x, w).y;
    for (const threads of [1, 3, 2, 4, 2]) {
      setNumThreads(threads);
      const again = rmsNormForward(x, w).y;
      assert.deepEqual(again, first, `bits changed with ${threads} threads`);
    }
  });

  it('rejects a bad thread count', () => {
    assert.throws(() => setNumThreads(0), /threads: expected an integer in \[1, 1024\]/);
    // Issue 12 item 15: 1.5 used to become 1 silently.
    for (const bad of [1.5, NaN, 2 ** 32 + 2, '2' as unknown as number])
      assert.throws(() => setNumThreads(bad), (e: Error) => /threads: expected an integer in \[1, 1024\]/.test(e.message));
  });

  // Issue 12 item 3: parallel_for read the pool size before taking the run lock, so a
  // resize in between left a job waiting forever for slots no thread would run (2 of 5
  // runs hung within ~2 s). A child process, so a hang is a timeout, not a stuck suite; the
  // debug delay holds the race window open so the old code hangs on every run.
  it('never deadlocks when worker threads run kernels while another thread resizes the pool', () => {
    const child = fileURLToPath(new URL('./parallel_child.js', import.meta.url));
    for (let run = 0; run < 1; run++) {
      const res = spawnSync(process.execPath, [child, '2'], {
        encoding: 'utf8', timeout: 30_000, env: { ...process.env, LGRPO_DEBUG_PARALLEL_DELAY_US: '300' },
      });
      assert.equal(res.signal, null, `run ${run}: hung (killed by ${res.signal} after 30 s)\n${res.stderr}`);
      assert.equal(res.status, 0, res.stderr);
      const { calls, flips } = JSON.parse(res.stdout) as { calls: number; flips: number };
      assert.ok(calls > 10 && flips > 10, `too little contention to mean anything: ${res.stdout}`);
    }
  });
});
