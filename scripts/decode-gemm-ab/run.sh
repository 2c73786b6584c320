#!/bin/bash
# Side-by-side timing of the decoding GEMMs (f32 and bf16 panels, 8 rows, the 0.5B shape's
# matrices) of two source trees: a git revision (A) and the working tree (B), or two
# revisions. Needs g++ on x86-64 and about 7 GB of memory.
#   scripts/decode-gemm-ab/run.sh REV_A [REV_B] [PAIRS]      e.g. run.sh HEAD~1
# B_FLAGS adds compiler flags to B alone, to compare a macro's values on one tree:
#   B_FLAGS=-DLGRPO_BF16_PANEL_AHEAD=1536 scripts/decode-gemm-ab/run.sh HEAD
# DECODE_AB_ONLY=f32 or bf16 times that precision alone.
# Time A/B > 1: B is faster. Only the kernels are timed; `bench --engine` times the engine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tree() {  # tree NAME REV: the sources of REV (or of the working tree for "")
  mkdir -p "$work/$1"
  if [ -z "$2" ]; then cp -r "$repo/native" "$work/$1/"; else git -C "$repo" archive "$2" native | tar -x -C "$work/$1"; fi
}
tree A "$1"
tree B "${2:-}"
flags="-O3 -DNDEBUG -mavx2 -mfma -mf16c -std=gnu++17"
for v in A B; do
  vflags=$flags
  [ "$v" = B ] && vflags="$flags ${B_FLAGS:-}"
  for src in native/ops/gemm.cc native/ops/gemm_bf16.cc native/parallel.cc native/simd.cc; do
    g++ $vflags -Dlgrpo=lgrpo_$v -I"$work/$v/native" -c "$work/$v/$src" -o "$work/$v-$(basename "$src").o" &
  done
  g++ $vflags -Dlgrpo=lgrpo_$v -DVARIANT=$v -I"$work/$v/native" -c "$here/variant.cc" -o "$work/$v-variant.o" &
done
wait
g++ -O2 "$here/main.cc" "$work"/*.o -o "$work/ab" -lpthread
"$work/ab" "${3:-30}"
