#!/usr/bin/env bash
# On a GPU host, from the repo root, one device call (binaries packed by tools/gpu/pack.sh, with bench_serve for the
# serving run; carry .gpu/pack): sessions 11-14's work checked and measured, on whichever card comes, most needed
# first. The CUDA tests; on a card that holds the whole FP8 model (H200) the serving engine under load at full size
# (CUDA_NEXT_SERVE=0 skips it); dependent launches (QUATRE_CUDA_PDL=1) against plain ones at decode batch 1 and 8;
# W8A8 (--fp8-activations) against W8A16, and W8A8 with BF16 attention operands, at prefill 8K and decode batch 1 and
# 64 (with their profiles when time allows); then split scores off, the old one-token MLA settings against the new
# defaults, and the first A/B again (16 layers, context 2048). LIMIT: the seconds the call may run (default 560);
# what would not fit is skipped, and the tests get half of a short call. The tables on stdout, the logs under
# OUT_DIR (only what fits the returned files: summaries, not every log).
#   run tool: command "bash tools/gpu/cuda_next.sh $OUT 560", carry [".gpu/pack"], timeout_s 580
set -uo pipefail
out=${1:?usage: cuda_next.sh OUT_DIR [LIMIT]}
mkdir -p "$out" /tmp/k
source tools/gpu/packed_env.sh
limit=${2:-560}  # the call's seconds: later parts are skipped when they would not fit
left() { echo $((limit - SECONDS)); }
full=0
[ ${#layers[@]} -eq 0 ] && full=1
timeout $((limit < 400 ? limit / 2 : 170)) bash tools/gpu/cuda_check.sh /tmp/k/check > "$out/check.txt" 2>&1
echo "== tests rc=$? ($SECONDS s)"
grep -E "^== |^\[  (PASSED|FAILED)|Failure|exception" "$out/check.txt" | grep -v "^== device" | paste -sd' ' | head -c 1500
echo
if [ $full = 1 ] && [ "${CUDA_NEXT_SERVE:-1}" = 1 ] && [ "$(left)" -gt 200 ]; then
  bash tools/gpu/cuda_serve.sh /tmp/k/serve 64 128 --temperature 0 > "$out/serve.txt" 2>&1
  cat "$out/serve.txt"
  export GPU_LAYERS=16  # the H100's depth, for the A/Bs below
  source tools/gpu/packed_env.sh
fi
# Decode at batch 1 and 8 under each environment setting given ("-": none), each one's rows printed as it ends.
ab() {
  for setting in "$@"; do
    [ "$(left)" -gt 40 ] || break
    env_args=()
    [ "$setting" = - ] || read -ra env_args <<< "$setting"
    timeout $(($(left) < 60 ? $(left) - 5 : 55)) env "${env_args[@]}" "$bin/quatre-bench" --random-weights "${layers[@]}" \
      --batch 1,8 --context 2048 --prefill 1024 --steps 5 > /tmp/k/ab.txt 2>&1
    echo "== $setting: rc=$? ($SECONDS s)"
    grep -E "^ +[0-9]+ +2048 " /tmp/k/ab.txt | awk '{print "   B=" $1, $3 " ms", $4 " tok/s"}'
  done
}
# Session 14's dependent launches (pdl.cuh) first: the quickest A/B.
ab - QUATRE_CUDA_PDL=1
# W8A8 (--fp8-activations static: the FP8 mma kernel) against W8A16, then with the attention's operands in BF16
# (--attention-operands bf16: one mma where fp32 takes three), at prefill 8K and decode batch 1 and 64.
for mode in none:fp32 static:fp32 static:bf16; do
  act=${mode%:*} ops=${mode#*:}
  [ "$(left)" -gt 70 ] || break
  profile=(--profile)
  [ "$(left)" -gt 260 ] || profile=()  # a short call: the figures without the op tables
  timeout $(($(left) < 120 ? $(left) - 10 : 110)) "$bin/quatre-bench" --random-weights "${layers[@]}" \
    --fp8-activations $act --attention-operands $ops --batch 1,64 --context 2048 --prefill 8192 --steps 5 \
    "${profile[@]}" > "$out/prefill_${act}_$ops.txt" 2>&1
  echo "== fp8 activations $act, attention operands $ops: rc=$? ($SECONDS s)"
  grep -vE "^  (op|[a-z])" "$out/prefill_${act}_$ops.txt" | tail -8
  grep -A12 "prefill T" "$out/prefill_${act}_$ops.txt" | tail -11
done
# Session 15's prompt runs in the naive form (mla_prefill.cu, BF16 operands only) against the absorbed kernels.
if [ "$(left)" -gt 70 ]; then
  timeout 60 env QUATRE_CUDA_MLA_PREFILL=0 "$bin/quatre-bench" --random-weights "${layers[@]}" --fp8-activations static \
    --attention-operands bf16 --batch 1 --context 2048 --prefill 8192 --steps 3 > "$out/prefill_absorbed.txt" 2>&1
  echo "== static:bf16 with QUATRE_CUDA_MLA_PREFILL=0: rc=$? ($SECONDS s)"
  grep -A1 "prefill T" "$out/prefill_absorbed.txt" | tail -2
fi
# Session 15's cuBLASLt path for the large W8A8 linears (gemm_lt.h) against the mma.sync tiles, the same prefill.
if [ "$(left)" -gt 70 ]; then
  timeout 60 env QUATRE_CUDA_CUBLASLT=1 "$bin/quatre-bench" --random-weights "${layers[@]}" --fp8-activations static \
    --attention-operands bf16 --batch 1 --context 2048 --prefill 8192 --steps 3 --profile > "$out/prefill_cublaslt.txt" 2>&1
  echo "== static:bf16 with QUATRE_CUDA_CUBLASLT=1: rc=$? ($SECONDS s)"
  grep -A12 "prefill T" "$out/prefill_cublaslt.txt" | tail -12
fi
# The peer for those linears: PyTorch's cuBLAS/CUTLASS GEMMs on one layer's prefill shapes (BF16, FP8, grouped).
if [ "$(left)" -gt 60 ]; then
  timeout 50 python3 tools/gpu/gemm_peer.py 8192 > "$out/gemm_peer.txt" 2>&1
  echo "== gemm peer: rc=$? ($SECONDS s)"
  tail -20 "$out/gemm_peer.txt"
fi
# Split scores off, and session 12's one-token MLA (the old settings against the new defaults); then the first A/B
# again (the card's drift).
old="QUATRE_CUDA_MLA_TC_KEYS=64 QUATRE_CUDA_MLA_QABS_SMALL=0 QUATRE_CUDA_MLA_COMBINE_PREFETCH=0"
ab QUATRE_CUDA_MLA_SPLIT_SCORES=0 "$old" QUATRE_CUDA_MLA_TC_KEYS=32 - QUATRE_CUDA_PDL=1
echo "== done in $SECONDS s"
