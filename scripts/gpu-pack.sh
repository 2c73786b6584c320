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
for dir in $(npm ls --all --parseable --omit=dev yargs @huggingface/tokenizers @huggingface/jinja 2>/dev/null | grep node_modules); do
  rel=${dir#"$PWD"/node_modules/}
  mkdir -p ".gpu/node_modules/$(dirname "$rel")" && cp -r "$dir" ".gpu/node_modules/$rel"
done
du -sh .gpu dist build-cmake/Release/lgrpo_native.node
echo "carry: .gpu dist build-cmake/Release/lgrpo_native.node   run: bash scripts/gpu-check.sh"
