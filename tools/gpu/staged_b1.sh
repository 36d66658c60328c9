#!/usr/bin/env bash
# On a GPU host, from the repo root (binaries packed by tools/gpu/pack.sh with quatre-bench; carry .gpu/pack): batch
# 1 with the staged kernel's streamed form (QUATRE_CUDA_STAGED_STREAM: 2 stages of 8 pieces, 3 of 4) and its rows of
# 8192 bytes (QUATRE_CUDA_STAGED_LONG_ROWS=1: the BF16 lm_head and router), apart and together, on the model the
# quatre-bench arguments give (default: the FP8 model). Logs under OUT_DIR; each run's step time on stdout.
#   Usage: bash tools/gpu/staged_b1.sh OUT_DIR [quatre-bench args, e.g. --dtype int4]
set -uo pipefail
out=${1:?usage: staged_b1.sh OUT_DIR [quatre-bench args]}
shift
mkdir -p "$out"
source tools/gpu/packed_env.sh > /dev/null
for v in "2 0" "3 0" "0 1" "2 1"; do
  read -r stream long <<< "$v"
  log="$out/b1_stream_${stream}_long_$long.txt"
  QUATRE_CUDA_STAGED_STREAM=$stream QUATRE_CUDA_STAGED_LONG_ROWS=$long timeout 80 "$bin/quatre-bench" --random-weights \
    --context 2048 --steps 5 --batch 1 "$@" > "$log" 2>&1
  echo "== batch 1, staged kernel streamed in $stream stages (0: its grid), long rows $long: rc=$?"
  grep -E "^ +[0-9]+ " "$log" | head -2
done
