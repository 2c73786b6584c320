// The seeded fuzzer (scripts/fuzz.mjs) as part of the suite: a short fixed-seed run over
// the whole public API, every case in a child process. Any crash, hang, unclear error or
// non-finite result from ordinary finite inputs fails it; the output names the seed and
// case to replay (`node scripts/fuzz.mjs --seed 1 --case K`). The long run: --long.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const script = fileURLToPath(new URL('../../scripts/fuzz.mjs', import.meta.url));

describe('fuzzer', () => {
  it('a seeded run over the public API: 0 crashes, 0 hangs, 0 unclear errors, 0 non-finite results', () => {
    const res = spawnSync(process.execPath, [script, '--seed', '1', '--cases', '40000', '--seconds', '40'], {
      encoding: 'utf8', timeout: 120_000,
    });
    const out = `${res.stdout}${res.stderr}`;
    assert.equal(res.signal, null, `the fuzzer itself was killed (${res.signal})\n${out}`);
    const summary = /(\d+) cases, (\d+) crashes, (\d+) hangs/.exec(out);
    assert.ok(summary, `no summary line\n${out}`);
    assert.ok(Number(summary[1]) >= 1000, `only ${summary[1]} cases ran\n${out}`);
    assert.equal(res.status, 0, out);
    assert.match(out, / 0 crashes, 0 hangs/);
    assert.match(out, /0 non-finite results, 0 unclear errors/);
  });
});
