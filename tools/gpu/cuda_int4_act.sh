#!/usr/bin/env bash
# On a GPU host, from the repo root, one device call (binaries packed by tools/gpu/pack.sh with quatre-bench and
# test_cuda_int4; carry .gpu/pack): the 4-bit tests, then the whole 4-bit model (36 layers) at decode batch 16-128
# with the routed experts' activations as three exact BF16 terms (QUATRE_CUDA_INT4_ACT=fp32) and as one BF16 plane
# (the default since 532946e), batch 64 profiled with the plane. Logs under OUT_DIR; the figures on stdout.
#   run tool: command "bash tools/gpu/cuda_int4_act.sh $OUT", carry [".gpu/pack"]
set -uo pipefail
out=${1:?usage: cuda_int4_act.sh OUT_DIR}
mkdir -p "$out"
source tools/gpu/packed_env.sh
timeout 150 "$bin/test_cuda_int4" --gtest_brief=1 > "$out/test_cuda_int4.log" 2>&1
echo "== test_cuda_int4 rc=$?"
grep -E "FAILED|Failure|Expected|Which|PASSED|error" "$out/test_cuda_int4.log" | head -14
bench=("$bin/quatre-bench" --random-weights --dtype int4 --context 2048 --steps 5 --prefill 1024)
for act in fp32 bf16; do
  QUATRE_CUDA_INT4_ACT=$act timeout 120 "${bench[@]}" --batch 16,32,64,128 > "$out/$act.txt" 2>&1
  echo "== activations $act rc=$?"
  grep -E "^ +[0-9]+ " "$out/$act.txt" | head -6
done
QUATRE_CUDA_INT4_ACT=bf16 timeout 90 "${bench[@]}" --batch 64 --profile > "$out/bf16_profile.txt" 2>&1
grep -E "moe (gate|down)|sum of ops" "$out/bf16_profile.txt" | head -4
