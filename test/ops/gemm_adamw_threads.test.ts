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

function inChild(threads: number, simd?: string): { simd: string; cases: Record<string, string>; simdCases: Record<string, string> } {
  const child = fileURLToPath(new URL('./threads_child.js', import.meta.url));
  const env: NodeJS.ProcessEnv = { ...process.env, LGRPO_NUM_THREADS: String(threads) };
  if (simd === undefined) delete env.LGRPO_SIMD;
  else env.LGRPO_SIMD = simd;
  const res = spawnSync(process.execPath, [child], { env, encoding: 'utf8' });
  assert.equal(res.status, 0, `child with ${threads} thread(s), LGRPO_SIMD=${simd ?? '(unset)'} failed: ${res.stderr}`);
  return JSON.parse(res.stdout.trim().split('\n').pop() as string);
}

describe('gemm and optimiser leaves: bits independent of the thread count', { skip: ON_GPU ? 'about the CPU twins (their thread count); the CUDA twins are compared with them in gemm.test and adamw.test' : false }, () => {
  it('gives identical bits twice in a row, and with 1 and 3 threads', () => {
    const here = threadCases();
    assert.deepEqual(threadCases(), here, 'a second run in this process differs');
    for (const threads of [1, 3]) {
      if (threads === buildInfo().threads) continue;
      assert.deepEqual(inChild(threads, process.env.LGRPO_SIMD).cases, here, `${threads} thread(s) differ from ${buildInfo().threads}`);
    }
  });

  // The AVX-512 kernels compute each element with the AVX2 kernels' operations in the
  // same order, so the run-time choice of path must not change a bit.
  it('gives identical bits on the AVX2 path (LGRPO_SIMD=avx2) and the best path the CPU has', (t) => {
    if (buildInfo().simd === 'scalar') {
      t.skip('a scalar build (no AVX2 compiled in): only one path to run');
      return;
    }
    const threads = buildInfo().threads;
    const avx2 = inChild(threads, 'avx2'), best = inChild(threads);
    assert.equal(avx2.simd, 'avx2+fma', 'LGRPO_SIMD=avx2 chose the AVX2 path');
    if (best.simd === 'avx2+fma') {
      t.skip('this CPU has no AVX-512: only one path to run');
      return;
    }
    assert.deepEqual(best.cases, avx2.cases, `${best.simd} differs from avx2+fma`);
    assert.deepEqual(best.simdCases, avx2.simdCases, `${best.simd} differs from avx2+fma`);
  });

  it('rejects an unknown LGRPO_SIMD with an error naming it', () => {
    const child = fileURLToPath(new URL('./threads_child.js', import.meta.url));
    const res = spawnSync(process.execPath, [child], { env: { ...process.env, LGRPO_SIMD: 'sse9' }, encoding: 'utf8' });
    assert.notEqual(res.status, 0);
    assert.match(res.stderr, /LGRPO_SIMD: expected auto, avx2, avx512 or avx512bf16, got 'sse9'/);
  });
});
