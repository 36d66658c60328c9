#!/usr/bin/env bash
# On a GPU host, from the repo root, one device call (binaries packed by tools/gpu/pack.sh with quatre-bench,
# test_cuda_int4 and test_cuda_matmul; carry .gpu/pack), most wanted first (a call that runs out of time still
# brings back what ran):
#   1. the tests packed;
#   2. the whole 4-bit model's prompts (128-8192 tokens) and decode at batch 1 and 64 with the default int8
#      activations, with and without a prompt's experts in groups of 64 rows on the small tensor-core kernel
#      (QUATRE_CUDA_Q8_WIDE=1; otherwise cuBLASLt's BF16 GEMMs from 4096 pairs, groups of 8 below);
#   3. batch 1 with the staged kernel's streamed form (QUATRE_CUDA_STAGED_STREAM: 2 stages of 8 pieces, 3 of 4) and
#      its rows of 8192 bytes (QUATRE_CUDA_STAGED_LONG_ROWS=1: the BF16 lm_head and router), apart and together;
#   4. decode at batch 64 profiled op by op (where the time outside the experts goes);
#   5. Nsight Compute on batch 1's 4-bit gated launch of the staged kernel (where its ~1 TB/s goes);
#   6. with wide groups, the 1K and 8K prompts profiled op by op, and the short prompts with wide groups from 4 and 8
#      pairs an expert (QUATRE_CUDA_Q8_WIDE_FROM).
# Logs under OUT_DIR; tables on stdout.
#   run tool: command "bash tools/gpu/cuda_int4_prefill.sh $OUT", carry [".gpu/pack"]
set -uo pipefail
out=${1:?usage: cuda_int4_prefill.sh OUT_DIR}
mkdir -p "$out"
bash tools/gpu/cuda_check.sh "$out/check" > "$out/check.txt" 2>&1
echo "== cuda_check rc=$?"
grep -E "^== |PASSED|FAILED|Failure" "$out/check.txt" | grep -v "not packed" | head -20
source tools/gpu/packed_env.sh > /dev/null
int4=(--random-weights --dtype int4 --context 2048)
rows() { grep -E "^ +[0-9]+ " "$1" | head -12; }
for wide in 1 0; do
  QUATRE_CUDA_Q8_WIDE=$wide timeout 150 "$bin/quatre-bench" "${int4[@]}" --steps 5 --batch 1,64 \
    --prefill 128,256,512,1024,2048,8192 > "$out/prefill_q8_$wide.txt" 2>&1
  echo "== int4, int8 activations, wide groups $wide: rc=$?"
  rows "$out/prefill_q8_$wide.txt"
done
bash tools/gpu/staged_b1.sh "$out" --dtype int4
timeout 100 "$bin/quatre-bench" "${int4[@]}" --steps 3 --batch 64 --profile > "$out/b64_profile.txt" 2>&1
echo "== int4 decode batch 64 profiled: rc=$?"
grep -A24 -E "^  op +calls" "$out/b64_profile.txt" | head -26
grep "sum of ops" "$out/b64_profile.txt"
NCU_NAME_BASE=demangled NCU_BENCH_ARGS="--dtype int4" timeout 150 bash tools/gpu/cuda_ncu_kernel.sh "$out/ncu" 1 \
  "staged_kernel<.*true, true, 1>@1" 2>&1 | head -50
export QUATRE_CUDA_Q8_WIDE=1
timeout 120 "$bin/quatre-bench" "${int4[@]}" --steps 3 --batch 1 --prefill 1024,8192 --profile > "$out/prefill_profile.txt" 2>&1
echo "== int4 prompts with wide groups profiled: rc=$?"
grep -E "^ +[0-9]+ |moe|attend|sum of ops" "$out/prefill_profile.txt" | grep -v "^ +1 " | head -20
for from in 4 8; do
  QUATRE_CUDA_Q8_WIDE_FROM=$from timeout 100 "$bin/quatre-bench" "${int4[@]}" --steps 3 --batch 1 \
    --prefill 128,256,512 > "$out/wide_from_$from.txt" 2>&1
  echo "== int4, wide groups from $from pairs an expert: rc=$?"
  rows "$out/wide_from_$from.txt" | tail -3
done
