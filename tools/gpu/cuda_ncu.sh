#!/usr/bin/env bash
# On a GPU host with Nsight Compute (ncu), from the repo root, one device call (binaries packed by tools/gpu/pack.sh,
# carry .gpu/pack): the GPU time of every kernel of a decode step, op by op (no graphs; the profiler serialises
# kernels, so the times have no launch gaps or host work in them), for a 2-layer FP8 model at context 1024, batch
# sizes given (default 1 and 64). CSVs under OUT_DIR; tools/gpu/ncu_table.py summarises one here.
#   run tool: command "bash tools/gpu/cuda_ncu.sh $OUT 1 64", carry [".gpu/pack"]
set -uo pipefail
out=${1:?usage: cuda_ncu.sh OUT_DIR [batch...]}
shift
[ $# -gt 0 ] || set -- 1 64
mkdir -p "$out"
source tools/gpu/packed_env.sh
ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
for B in "$@"; do
  # 3 decode steps (2 warm-up + 1) then a 1024-token prefill; skipped: most of the ~800 kernels that draw the weights.
  timeout 240 "$ncu" --csv --metrics gpu__time_duration.sum --cache-control none --clock-control none \
    --launch-skip 780 --launch-count 400 "$bin/quatre-bench" --random-weights --layers 2 --batch "$B" --context 1024 --steps 1 \
    --prefill 1024 --no-graphs > "$out/ncu_b$B.csv" 2> "$out/ncu_b$B.err"
  echo "== batch $B rc=$? $(grep -c gpu__time_duration "$out/ncu_b$B.csv") kernels"
  python3 tools/gpu/ncu_table.py "$out/ncu_b$B.csv" | tail -30
done
