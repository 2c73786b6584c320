// Runs a snippet in a child Node process with LGRPO_NUM_THREADS set, for tests that the
// engine leaf ops give the same bits for any thread count (the pool size is fixed per
// process). The snippet sees `Rng` (test/helpers) and `done(arrays)`, which prints a
// SHA-256 of the arrays' bytes; hashInChild returns that hash.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

/** A module URL relative to this folder (dist/test/ops), for the snippet's imports. */
export function here(relative: string): string {
  return new URL(relative, import.meta.url).href;
}

export function hashInChild(threads: number, snippet: string): string {
  const code = `
    import { createHash } from 'node:crypto';
    const { Rng } = await import(${JSON.stringify(here('../helpers.js'))});
    const { buildInfo } = await import(${JSON.stringify(here('../../src/index.js'))});
    const done = (arrays) => {
      const h = createHash('sha256');
      for (const a of arrays) h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
      console.log(buildInfo().threads + ' ' + h.digest('hex'));
    };
    ${snippet}`;
  const child = spawnSync(process.execPath, ['--input-type=module', '-e', code], {
    env: { ...process.env, LGRPO_NUM_THREADS: String(threads) },
    encoding: 'utf8',
  });
  assert.equal(child.status, 0, `child with ${threads} threads failed: ${child.stderr}`);
  const [count, hash] = child.stdout.trim().split(/\s+/).slice(-2);
  assert.equal(Number(count), threads, 'the child ran with the requested thread count');
  assert.match(hash, /^[0-9a-f]{64}$/);
  return hash;
}
