// The README's kernel example is examples/kernels.mjs verbatim, and it runs.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('examples', () => {
  it('the README shows examples/kernels.mjs as it is', () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const example = readFileSync(join(root, 'examples', 'kernels.mjs'), 'utf8');
    assert.ok(readme.includes(example.trim()), 'README.md must contain examples/kernels.mjs verbatim');
  });

  it('examples/kernels.mjs runs', () => {
    const run = spawnSync(process.execPath, [join(root, 'examples', 'kernels.mjs')], { encoding: 'utf8', env: process.env });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /zeroCopy: true/);
  });
});
