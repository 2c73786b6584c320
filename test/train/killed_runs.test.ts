// Runs killed with SIGKILL at several moments (warm-up, mid-step, around checkpoint
// writes) always recover to the metrics of an uninterrupted run: with --resume when a
// checkpoint was written, else with --restart (issue 12 item 13 and "killed runs"). The
// kill moments follow the run's own progress lines.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findCheckpoint } from '../../src/train/checkpoint.js';
import { readMetrics, type MetricRecord } from '../../src/train/metrics.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'lgrpo-killed-'));
after(() => rmSync(root, { recursive: true, force: true }));

const STEPS = 5;
const ARGS = ['--steps', String(STEPS), '--sft-steps', '6', '--prompts-per-step', '2', '--group-size', '2', '--max-new-tokens', '6',
  '--eval-size', '2', '--eval-every', '2', '--save-every', '1', '--warmup', '0', '--reward', 'math', '--seed', '3'];

function run(args: string[]): void {
  const r = spawnSync(process.execPath, [MAIN, 'train', ...args], { encoding: 'utf8', timeout: 120_000, cwd: root });
  assert.equal(r.status, 0, `train ${args.join(' ')}\n${r.stderr}`);
}

function comparable(records: MetricRecord[]): Record<string, unknown>[] {
  return records.map((r) => Object.fromEntries(Object.entries(r).filter(([k]) => !k.startsWith('time_'))));
}

test('runs killed by SIGKILL at several moments recover to the uninterrupted metrics', { timeout: 600_000 }, async () => {
  const straight = join(root, 'straight');
  run([...ARGS, '--out', straight]);
  const expected = comparable(readMetrics(join(straight, 'metrics.jsonl')));
  assert.ok(expected.some((r) => r.kind === 'train' && r.step === STEPS));

  const outcomes: string[] = [];
  // Each kill waits for a line of the run's progress, then a few ms more: inside the
  // warm-up, around the step-0 eval, and at steps 1-4 (each followed by a checkpoint write).
  const moments: Array<[RegExp, number]> = [
    [/supervised warm-up: /, 40], [/eval @ step 0/, 0], [/step 1\/5/, 0], [/step 2\/5/, 3], [/step 3\/5/, 15], [/step 4\/5/, 1],
  ];
  for (const [i, [marker, delay]] of moments.entries()) {
    const out = join(root, `killed-${i}`);
    const child = spawn(process.execPath, [MAIN, 'train', ...ARGS, '--out', out], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let seen = '', timer: ReturnType<typeof setTimeout> | undefined;
    const watch = (chunk: Buffer) => {
      seen += chunk.toString();
      if (timer === undefined && marker.test(seen)) timer = setTimeout(() => child.kill('SIGKILL'), delay);
    };
    child.stdout.on('data', watch);
    child.stderr.on('data', watch);
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    clearTimeout(timer);
    const fraction = `${marker.source} +${delay} ms`;
    let how: string;
    if (code === 0) {
      how = 'finished before the kill';
    } else {
      let resumable = true;
      try { findCheckpoint(out); } catch { resumable = false; }
      if (resumable) run(['--resume', out, '--steps', String(STEPS)]);
      else run([...ARGS, '--out', out, '--restart']);
      how = resumable ? 'resumed' : 'restarted';
    }
    outcomes.push(`${fraction}: ${how}`);
    assert.deepEqual(comparable(readMetrics(join(out, 'metrics.jsonl'))), expected, `killed at ${fraction} (${how})`);
  }
  console.log(`# ${outcomes.join('; ')}`);
});
