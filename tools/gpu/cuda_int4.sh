#!/usr/bin/env bash
# On an H100 (or any card), from the repo root, one device call (binaries packed by tools/gpu/pack.sh, carry
# .gpu/pack): issue #11's fit and engine figures for the whole model with 4-bit experts (--dtype int4, all 36
# layers) — decode at batch 1, 8 and 64 (context 1024) and at batch 1 with a 64K-token context beside the weights,
# each baseline binary packed in .gpu/cuda/base/ beside the packed one; then the serving engine under load.
#   run tool: command "bash tools/gpu/cuda_int4.sh $OUT [--no-serve]", carry [".gpu/pack"]
set -uo pipefail
out=${1:?usage: cuda_int4.sh OUT_DIR [--no-serve]}
mkdir -p "$out"
source tools/gpu/packed_env.sh
for b in "$bin/quatre-bench" .gpu/cuda/base/quatre-bench*; do
  [ -x "$b" ] || continue
  name=$(basename "$b")
  timeout 100 "$b" --random-weights --dtype int4 --batch 1,8,64 --context 1024 --steps 5 > "$out/$name-1k.txt" 2>&1
  timeout 100 "$b" --random-weights --dtype int4 --batch 1 --context 65536 --prefill 1024 --steps 3 \
    > "$out/$name-64k.txt" 2>&1
  echo "== $name, int4 (rc=$?)"
  grep -hE "^weights|^ +[0-9]+ +[0-9.]+ " "$out/$name-1k.txt" "$out/$name-64k.txt" | sed 's/^/   /'
done
[ "${2:-}" = --no-serve ] && exit 0
echo "== bench_serve int4 --concurrency 32 --requests 64"
timeout 150 "$bin/bench_serve" --random-weights --preset mistral-small-4 --dtype int4 --device cuda \
  --gpu-memory-utilization 0.9 --concurrency 32 --requests 64 --temperature 0 > "$out/serve_int4.txt" 2>&1
echo "rc=$?"
tail -14 "$out/serve_int4.txt"
