#!/usr/bin/env bash
# On a GPU host, from the repo root, one device call's worth of CUDA performance work (binaries packed here by
# tools/gpu/pack.sh, carry .gpu/pack): the CUDA tests (cuda_check.sh; test_cuda_ops and test_cuda_matmul also with the tensor cores
# off), then `quatre-bench` on the FP8 mistral-small-4 preset with random weights (all 36 layers where the card
# holds them, else --layers 16): decode at several batch sizes with the per-op profile, prefill 1024; another
# commit's quatre-bench copied by hand to .gpu/cuda/base/ when present (the baseline on the same machine, e.g.
# main's when measuring a branch); the tensor-core comparison at the larger sizes (QUATRE_CUDA_TC=0 where a build
# has them). Logs under OUT_DIR; the tables (and each profile's largest rows) on stdout. Fits one 240 s call.
#   run tool: command "bash tools/gpu/cuda_perf.sh $OUT", carry [".gpu/pack"]
# Usage: bash tools/gpu/cuda_perf.sh OUT_DIR [batch list, default 1,8,32,64,128,256]
set -uo pipefail
out=${1:?usage: cuda_perf.sh OUT_DIR [batches]}
batches=${2:-1,8,32,64,128,256}
mkdir -p "$out"
source tools/gpu/packed_env.sh
timeout 90 bash tools/gpu/cuda_check.sh "$out/check" > "$out/check.txt" 2>&1
echo "== tests: rc=$?"
grep -E "^\[  (PASSED|FAILED)|Failure|Which is|^== " "$out/check.txt" | head -30
echo "== bench"
# Both binaries with the same numerics (the defaults since 127a6b6; an older baseline's were W8A16 and fp32):
numerics=(--fp8-activations static --attention-operands bf16)
timeout 75 "$bin/quatre-bench" --random-weights "${layers[@]}" "${numerics[@]}" --batch "$batches" --context 1024 --prefill 1024 \
  --steps 6 --profile > "$out/bench.txt" 2>&1
echo "rc=$?"
awk '/^  op /{n=0} /^  [^ ]/{n++; if (n<=11 || /sum of ops/) print; next} {print}' "$out/bench.txt"
if [ -x .gpu/cuda/base/quatre-bench ]; then
  echo "== baseline bench (.gpu/cuda/base)"
  timeout 45 .gpu/cuda/base/quatre-bench --random-weights "${layers[@]}" "${numerics[@]}" --batch 1,8,64 --context 1024 \
    --prefill 1024 --steps 4 > "$out/bench_base.txt" 2>&1
  echo "rc=$?"
  grep -vE "^  " "$out/bench_base.txt" | tail -9
fi
for t in test_cuda_ops test_cuda_matmul; do
  echo "== $t, QUATRE_CUDA_TC=0"
  QUATRE_CUDA_TC=0 timeout 20 "$bin/$t" --gtest_brief=1 > "$out/${t}_tc_off.txt" 2>&1
  echo "rc=$?"; tail -2 "$out/${t}_tc_off.txt"
done
echo "== bench, tensor cores off"
QUATRE_CUDA_TC=0 timeout 30 "$bin/quatre-bench" --random-weights "${layers[@]}" --batch 64,256 --context 1024 \
  --prefill 1024 --steps 3 > "$out/bench_tc_off.txt" 2>&1
echo "rc=$?"
grep -vE "^  " "$out/bench_tc_off.txt" | tail -8
