// The thread pool: resizing between jobs must neither crash nor change any bits
// (kernels split work statically, so results do not depend on the thread count).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
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
  });
});
