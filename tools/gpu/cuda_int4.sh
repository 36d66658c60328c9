#!/usr/bin/env bash
# On an H100 (or any card), from the repo root, one device call (binaries packed by tools/gpu/pack.sh, carry
# .gpu/cuda): issue #11's fit and engine figures for the whole model with 4-bit experts (--dtype int4, all 36
# layers) — decode at batch 1 with a 64K-token context beside the weights, and the serving engine under load.
#   run tool: command "bash tools/gpu/cuda_int4.sh $OUT", carry [".gpu/pack"]
set -uo pipefail
out=${1:?usage: cuda_int4.sh OUT_DIR}
mkdir -p "$out"
source tools/gpu/packed_env.sh
timeout 120 "$bin/quatre-bench" --random-weights --dtype int4 --batch 1 --context 65536 --prefill 1024 --steps 3 \
  > "$out/int4_64k.txt" 2>&1
echo "== int4, 64K context rc=$?"
grep -vE "^  op|^  [a-z]" "$out/int4_64k.txt"
echo "== bench_serve int4 --concurrency 32 --requests 64"
timeout 150 "$bin/bench_serve" --random-weights --preset mistral-small-4 --dtype int4 --device cuda \
  --gpu-memory-utilization 0.9 --concurrency 32 --requests 64 --temperature 0 > "$out/serve_int4.txt" 2>&1
echo "rc=$?"
tail -14 "$out/serve_int4.txt"
