// The README's examples are examples/*.mjs verbatim, and they run.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('examples', () => {
  for (const [file, output] of [['kernels.mjs', /zeroCopy: true/], ['policy.mjs', /gradNorm/]] as const) {
    it(`the README shows examples/${file} as it is`, () => {
      const readme = readFileSync(join(root, 'README.md'), 'utf8');
      const example = readFileSync(join(root, 'examples', file), 'utf8');
      assert.ok(readme.includes(example.trim()), `README.md must contain examples/${file} verbatim`);
    });

    it(`examples/${file} runs`, () => {
      const run = spawnSync(process.execPath, [join(root, 'examples', file)], { encoding: 'utf8', env: process.env });
      assert.equal(run.status, 0, run.stderr);
      assert.match(run.stdout, output);
    });
  }
});
