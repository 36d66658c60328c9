#!/usr/bin/env bash
# On a GPU host, from the repo root, one device call (binaries packed by tools/gpu/pack.sh with test_cuda_int4,
# test_cuda_matmul and quatre-bench; carry .gpu/pack): session 18's 4-bit work — the tests, then the whole 4-bit
# model (36 layers) at decode batch 1/8/32/64 and a prefill of 8192 tokens with the defaults (terms made once, a
# prompt's experts on BF16 GEMMs; batch 64 and the prompt profiled), and the same binary with both off
# (QUATRE_CUDA_INT4_TERMS=0 QUATRE_CUDA_LT_INT4=0). Logs under OUT_DIR; the figures on stdout.
#   run tool: command "bash tools/gpu/cuda_int4_next.sh $OUT", carry [".gpu/pack"]
set -uo pipefail
out=${1:?usage: cuda_int4_next.sh OUT_DIR}
mkdir -p "$out"
source tools/gpu/packed_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
tests() {  # the most telling first: a call may run out of device time
  for t in "$@"; do
    [ -x "$bin/$t" ] || continue
    timeout 150 "$bin/$t" --gtest_brief=1 > "$out/$t.log" 2>&1
    echo "== $t rc=$?"
    grep -E "FAILED|Failure|Expected|Which|PASSED|error" "$out/$t.log" | head -14
  done
}
tests test_cuda_int4
bench=("$bin/quatre-bench" --random-weights --dtype int4 --context 2048 --steps 5)
timeout 150 "${bench[@]}" --batch 1,8,32,64 --prefill 8192 --profile > "$out/new.txt" 2>&1
echo "== defaults rc=$?"
grep -E "^ +[0-9]+ |^(device|weights|decode|prefill)|^ +(decode|prefill) " "$out/new.txt" | head -16
grep -E "moe|sum of ops" "$out/new.txt" | head -40
QUATRE_CUDA_INT4_TERMS=0 QUATRE_CUDA_LT_INT4=0 timeout 100 "${bench[@]}" --batch 8,32,64 --prefill 8192 > "$out/old.txt" 2>&1
echo "== terms and BF16 GEMMs off rc=$?"
grep -E "^ +[0-9]+ " "$out/old.txt" | head -8
tests test_cuda_matmul
