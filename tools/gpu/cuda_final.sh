#!/usr/bin/env bash
# On a GPU host, from the repo root, one device call (binaries packed by tools/gpu/pack.sh, carry .gpu/pack): the
# CUDA tests (cuda_check.sh), the decode/prefill bench (16 layers on a card that cannot hold 36) with the batch-1 profile next to a baseline binary
# in .gpu/cuda/base/ (if any), the whole model with 4-bit experts (--dtype int4: all 36 layers fit an H100), and the
# serving engine under load (cuda_serve.sh, greedy; skipped with --no-serve). Logs under OUT_DIR.
#   run tool: command "bash tools/gpu/cuda_final.sh $OUT [--no-serve]", carry [".gpu/pack"]
set -uo pipefail
out=${1:?usage: cuda_final.sh OUT_DIR [--no-serve]}
serve=${2:-}
mkdir -p "$out"
source tools/gpu/packed_env.sh
timeout 150 bash tools/gpu/cuda_check.sh "$out/check" > "$out/check.txt" 2>&1
echo "== tests rc=$?"
grep -E "^== |^\[  (PASSED|FAILED)|Failure|Expected|actual|exception" "$out/check.txt" | head -40
# Both binaries with the same numerics (the defaults since 127a6b6; an older baseline's were W8A16 and fp32):
numerics=(--fp8-activations static --attention-operands bf16)
timeout 100 "$bin/quatre-bench" --random-weights "${layers[@]}" "${numerics[@]}" --batch 1,8,64,256 --context 1024 --prefill 1024,4096 \
  --steps 5 --profile > "$out/bench.txt" 2>&1
echo "== bench rc=$?"
grep -vE "^  (op|[a-z])" "$out/bench.txt"
grep -A6 "^  op" "$out/bench.txt" | head -16
if [ -x .gpu/cuda/base/quatre-bench ]; then
  timeout 45 .gpu/cuda/base/quatre-bench --random-weights "${layers[@]}" "${numerics[@]}" --batch 1,8,64,256 --context 1024 --prefill 1024 \
    --steps 5 > "$out/base.txt" 2>&1
  echo "== baseline rc=$?"
  grep -vE "^  (op|[a-z])" "$out/base.txt" | tail -9
fi
timeout 100 "$bin/quatre-bench" --random-weights --dtype int4 --batch 1,8,64 --context 1024 --prefill 1024 \
  --steps 5 --profile > "$out/int4.txt" 2>&1
echo "== int4 (36 layers) rc=$?"
grep -vE "^  (op|[a-z])" "$out/int4.txt"
awk '/^  op/{c++} c==1' "$out/int4.txt" | head -12
[ "$serve" = --no-serve ] || bash tools/gpu/cuda_serve.sh "$out/serve" 32 64 --temperature 0
