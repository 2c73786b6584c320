// Spawning the compiled `lgrpo-native` bin as a user would, for the CLI tests.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

// dist*/test/cli/run_cli.js → dist*/src/cli/main.js, whichever dist folder this runs from.
export const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export function cli(args: string[], cwd?: string, timeoutMs = 120_000): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: timeoutMs, cwd });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

export function assertPositive(value: unknown, label: string): void {
  assert.equal(typeof value, 'number', `${label}: expected a number, got ${JSON.stringify(value)}`);
  assert.ok(Number.isFinite(value as number) && (value as number) > 0, `${label}: expected finite and > 0, got ${value}`);
}
