// The results of gemm, adamwStep and gradSumSquares must not depend on the thread count:
// each C element / each chunk is owned by one thread and reduced in a fixed order. The
// pool size is fixed when the addon loads, so other counts run in child processes.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { buildInfo } from '../../src/index.js';
import { ON_GPU } from '../helpers.js';
import { threadCases } from './threads_child.js';

function inChild(threads: number): Record<string, string> {
  const child = fileURLToPath(new URL('./threads_child.js', import.meta.url));
  const res = spawnSync(process.execPath, [child], { env: { ...process.env, LGRPO_NUM_THREADS: String(threads) }, encoding: 'utf8' });
  assert.equal(res.status, 0, `child with ${threads} thread(s) failed: ${res.stderr}`);
  return JSON.parse(res.stdout.trim().split('\n').pop() as string);
}

describe('gemm and optimiser leaves: bits independent of the thread count', { skip: ON_GPU ? 'about the CPU twins (their thread count); the CUDA twins are compared with them in gemm.test and adamw.test' : false }, () => {
  it('gives identical bits twice in a row, and with 1 and 3 threads', () => {
    const here = threadCases();
    assert.deepEqual(threadCases(), here, 'a second run in this process differs');
    for (const threads of [1, 3]) {
      if (threads === buildInfo().threads) continue;
      assert.deepEqual(inChild(threads), here, `${threads} thread(s) differ from ${buildInfo().threads}`);
    }
  });
});
