#!/usr/bin/env node
// Prints the C++ sources of the CPU-only addon, one per line, for binding.gyp
// (node-gyp has no globs): every .cc under native/, in a stable order.
import { readdirSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

function collect(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return collect(path);
    return entry.name.endsWith('.cc') ? [relative(root, path)] : [];
  });
}

console.log(collect(join(root, 'native')).sort().join('\n'));
