#!/usr/bin/env bash
# Prepares what scripts/gpu-check.sh needs on a GPU machine without Node.js or network:
# the CUDA addon (build-cmake/), compiled TypeScript (dist/), and in .gpu/ a packed Node
# binary and the runtime packages the CLI imports (the rest of node_modules stays here:
# a device run carries at most 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
node -e "import('./dist/src/index.js').then(m => { if (!m.buildInfo().cuda) { console.error('build the CUDA addon first (npm run build:addon with nvcc on PATH)'); process.exit(1); } })"
mkdir -p .gpu
[ -f .gpu/node.xz ] || ../shared/gpu/pack-node.sh
rm -rf .gpu/node_modules && mkdir -p .gpu/node_modules
# The runtime packages the CLI imports and everything they depend on, resolved as Node
# resolves them (nested node_modules first, then hoisted). Only the top-level folders are
# copied: a nested package lies inside one of them (cp -r onto an existing folder would
# copy it a second time, one level down).
node --input-type=module -e "
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
const seen = new Set();
function visit(name, from) {
  for (let dir = from; ; dir = dirname(dir)) {
    const at = join(dir, 'node_modules', name);
    try { var pkg = JSON.parse(readFileSync(join(at, 'package.json'), 'utf8')); } catch { if (dir === process.cwd()) throw new Error('cannot resolve ' + name); continue; }
    if (seen.has(at)) return;
    seen.add(at);
    for (const dep of Object.keys(pkg.dependencies ?? {})) visit(dep, at);
    return;
  }
}
for (const name of ['yargs', '@huggingface/tokenizers', '@huggingface/jinja']) visit(name, process.cwd());
const rel = [...seen].map((p) => p.slice(process.cwd().length + '/node_modules/'.length));
console.log(rel.filter((p) => !p.includes('/node_modules/')).join('\\n'));
" | while read -r rel; do
  mkdir -p ".gpu/node_modules/$(dirname "$rel")" && cp -r "node_modules/$rel" ".gpu/node_modules/$rel"
done
du -sh .gpu dist build-cmake/Release/lgrpo_native.node
echo "carry: .gpu dist build-cmake/Release/lgrpo_native.node   run: bash scripts/gpu-check.sh"
