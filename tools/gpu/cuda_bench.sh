#!/usr/bin/env bash
# On a GPU host, from the repo root: `quatre bench` (or quatre-bench, packed here by tools/gpu/pack.sh, carry .gpu/pack) on random
# weights drawn on the GPU. Usage: bash tools/gpu/cuda_bench.sh OUT_DIR [extra bench args...]
# Default: the full mistral-small-4 preset in FP8 (needs the H200's memory; on an H100 pass --layers 16).
set -uo pipefail
out=${1:?usage: cuda_bench.sh OUT_DIR [bench args]}
shift
mkdir -p "$out"
source tools/gpu/packed_env.sh  # $bin (unpacked from .gpu/pack), its libraries on LD_LIBRARY_PATH
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader;
  } | tee "$out/bench_env.txt"
if [ -x "$bin/quatre" ]; then cmd=("$bin/quatre" bench); else cmd=("$bin/quatre-bench"); fi
"${cmd[@]}" --random-weights "$@" 2>&1 | tee -a "$out/bench.txt"
