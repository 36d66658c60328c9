#!/usr/bin/env bash
# On a GPU host, from the repo root: the serving engine under load on random FP8 weights of the real shape
# (bench_serve --random-weights, packed by tools/gpu/pack.sh with target bench_serve; carry .gpu/pack): the KV
# cache sized by --gpu-memory-utilization, then a closed loop of concurrent requests (issue #7's figures).
# All 36 layers where the card holds them (H200), else --layers 16. Logs under OUT_DIR; the results on stdout.
#   run tool: command "bash tools/gpu/cuda_serve.sh $OUT", carry [".gpu/pack"]
# Usage: bash tools/gpu/cuda_serve.sh OUT_DIR [concurrency list, default 16,64] [requests, default 128] [bench_serve args...]
# (e.g. --temperature 0: random weights give flat logits rows, whose draws at temperature 1 mostly fall past the
# device summary's candidates onto the host's whole-row path)
set -uo pipefail
out=${1:?usage: cuda_serve.sh OUT_DIR [concurrency list] [requests]}
concurrency=${2:-16,64}
requests=${3:-128}
shift 3 2>/dev/null || shift $#
mkdir -p "$out"
source tools/gpu/packed_env.sh
for c in ${concurrency//,/ }; do
  echo "== bench_serve --concurrency $c --requests $requests"
  timeout 150 "$bin/bench_serve" --random-weights --preset mistral-small-4 --dtype fp8 "${layers[@]}" --device cuda \
    --gpu-memory-utilization 0.9 --concurrency "$c" --requests "$requests" "$@" > "$out/serve_c$c.txt" 2>&1
  echo "rc=$?"
  tail -14 "$out/serve_c$c.txt"
done
