#!/usr/bin/env node
// Runs every compiled *.test.js under dist/test with node:test (Node 20 has no
// glob support in `node --test`). Extra arguments are passed to node --test.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const testRoot = join(root, process.env.LGRPO_TEST_DIST ?? 'dist', 'test');

function collect(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return collect(path);
    return entry.name.endsWith('.test.js') ? [path] : [];
  });
}

const files = collect(testRoot).sort();
const filter = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const flags = process.argv.slice(2).filter((a) => a.startsWith('-'));
const selected = filter.length ? files.filter((f) => filter.some((s) => f.includes(s))) : files;
if (selected.length === 0) {
  console.error(`no test files under ${testRoot}${filter.length ? ` matching ${filter.join(', ')}` : ''}; run npm run build:ts first`);
  process.exit(1);
}
const result = spawnSync(process.execPath, ['--test', '--test-reporter=spec', ...flags, ...selected], { stdio: 'inherit' });
process.exit(result.status ?? 1);
