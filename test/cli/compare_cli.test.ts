// `lgrpo-native compare`, for what test/cli/train_cli.test.ts does not cover: its own
// default budget per run, and an output directory that cannot be created.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { DEFAULT_COMPARE_STEPS, compareRunConfig } from '../../src/cli/compare.js';
import { DEFAULT_STEPS } from '../../src/train/config.js';
import { MAIN, cli } from './run_cli.js';

test('compare runs DEFAULT_COMPARE_STEPS per run unless --steps is given on the command line or in --config', () => {
  assert.notEqual(DEFAULT_COMPARE_STEPS, DEFAULT_STEPS, 'the test would pass with the train default');
  const dir = mkdtempSync(join(tmpdir(), 'lgrpo-compare-config-'));
  try {
    const out = join(dir, 'run');
    assert.equal(compareRunConfig({ out }).config.steps, DEFAULT_COMPARE_STEPS);
    assert.equal(compareRunConfig({ out, steps: 7 }).config.steps, 7);
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify({ steps: 9 }));
    assert.equal(compareRunConfig({ out, config: file }).config.steps, 9);
    // The schedule decays to 0 at the run's own --steps, whichever default gave it.
    assert.equal(compareRunConfig({ out, 'lr-schedule': 'cosine' }).config.steps, DEFAULT_COMPARE_STEPS);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const help = cli(['compare', '--help']);
  assert.equal(help.status, 0, help.stderr);
  assert.match(help.stdout.replace(/\s+/g, ' '), new RegExp(`--steps .*\\[default: ${DEFAULT_COMPARE_STEPS} \\(train's default`));
});

// Node's recursive mkdir spins forever at 100% CPU under /proc (the trainer's twin of this
// test is in test/train/reliability.test.ts). A child process: a synchronous spin cannot be
// interrupted by a test timeout, only by killing the process.
test('compare --out under /proc fails at once, naming --out, instead of spinning', () => {
  const r = spawnSync(process.execPath, [MAIN, 'compare', '--out', '/proc/lgrpo-compare/x', '--losses', 'grpo', '--seeds', '1', '--steps', '1'],
    { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.signal, null, 'spun until killed');
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /out: cannot create \/proc\/lgrpo-compare\/x/);
});
