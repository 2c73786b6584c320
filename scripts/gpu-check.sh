#!/usr/bin/env bash
# One call on a lent GPU machine (see README "CUDA without a GPU, and with one"):
#   run: bash scripts/gpu-check.sh      carry: .gpu dist build-cmake/Release/lgrpo_native.node
# Prepared here by scripts/gpu-pack.sh. The device has no Node.js: the packed binary in
# .gpu/node.xz is unpacked first, and .gpu/node_modules holds the runtime packages.
# Here, `bash scripts/gpu-check.sh --emulated` runs the same steps on the emulated cuda:0.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null && [ -f .gpu/node.xz ]; then
  xz -dc .gpu/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH
fi
[ -d node_modules ] || { [ -d .gpu/node_modules ] && ln -s .gpu/node_modules node_modules; }
command -v nvidia-smi >/dev/null && nvidia-smi -L || true
exec node scripts/gpu-check.mjs "$@"
