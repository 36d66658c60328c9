#!/usr/bin/env bash
# On a GPU host, from the repo root, one device call (binaries packed by tools/gpu/pack.sh with bench_serve, carry
# .gpu/pack): sessions 12-13's work checked and measured, on whichever card comes, most needed first. The CUDA
# tests; on a card that holds the whole FP8 model (H200) the serving engine under load at full size (issue #7); W8A8
# against W8A16 (--fp8-activations), and BF16 attention operands, at prefill 8K and decode batch 1 and 64 with their profiles; then the A/B of dependent launches (QUATRE_CUDA_PDL=1) and of the
# old one-token MLA settings against the new defaults at batch 1 and 8 (16 layers, context 2048). LIMIT: the
# seconds the call may run (default 560); what would not fit is skipped. CUDA_NEXT_SERVE=0 skips the serving run. The tables on stdout, the
# logs under OUT_DIR (only what fits the returned files: summaries, not every log).
#   run tool: command "bash tools/gpu/cuda_next.sh $OUT 560", carry [".gpu/pack"], timeout_s 580
set -uo pipefail
out=${1:?usage: cuda_next.sh OUT_DIR [LIMIT]}
mkdir -p "$out" /tmp/k
source tools/gpu/packed_env.sh
limit=${2:-560}  # the call's seconds: later parts are skipped when they would not fit
left() { echo $((limit - SECONDS)); }
full=0
[ ${#layers[@]} -eq 0 ] && full=1
timeout $((limit < 260 ? limit - 90 : 170)) bash tools/gpu/cuda_check.sh /tmp/k/check > "$out/check.txt" 2>&1
echo "== tests rc=$? ($SECONDS s)"
grep -E "^== |^\[  (PASSED|FAILED)|Failure|exception" "$out/check.txt" | grep -v "^== device" | paste -sd' ' | head -c 1500
echo
if [ $full = 1 ] && [ "${CUDA_NEXT_SERVE:-1}" = 1 ] && [ "$(left)" -gt 200 ]; then
  bash tools/gpu/cuda_serve.sh /tmp/k/serve 64 128 --temperature 0 > "$out/serve.txt" 2>&1
  cat "$out/serve.txt"
  export GPU_LAYERS=16  # the H100's depth, for the A/Bs below
  source tools/gpu/packed_env.sh
fi
# W8A8 (--fp8-activations static: the FP8 mma kernel) against W8A16, then with the attention's operands in BF16
# (--attention-operands bf16: one mma where fp32 takes three), at prefill 8K and decode batch 1 and 64.
for mode in none:fp32 static:fp32 static:bf16; do
  act=${mode%:*} ops=${mode#*:}
  [ "$(left)" -gt 70 ] || break
  profile=(--profile)
  [ "$(left)" -gt 200 ] || profile=()  # a short call: the figures without the op tables
  timeout $(($(left) < 120 ? $(left) - 10 : 110)) "$bin/quatre-bench" --random-weights "${layers[@]}" \
    --fp8-activations $act --attention-operands $ops --batch 1,64 --context 2048 --prefill 8192 --steps 5 \
    "${profile[@]}" > "$out/prefill_${act}_$ops.txt" 2>&1
  echo "== fp8 activations $act, attention operands $ops: rc=$? ($SECONDS s)"
  grep -vE "^  (op|[a-z])" "$out/prefill_${act}_$ops.txt" | tail -8
  grep -A12 "prefill T" "$out/prefill_${act}_$ops.txt" | tail -11
done
# Session 14's dependent launches of the staged matmuls (pdl.cuh), and session 12's one-token MLA: the old settings
# against the new defaults.
if [ "$(left)" -gt 90 ]; then
  old="QUATRE_CUDA_MLA_TC_KEYS=64 QUATRE_CUDA_MLA_QABS_SMALL=0 QUATRE_CUDA_MLA_COMBINE_PREFETCH=0"
  KNOBS_TESTS=0 KNOBS_BATCH=1,8 KNOBS_CONTEXT=2048 timeout $(($(left) - 10)) bash tools/gpu/cuda_knobs.sh /tmp/k/mla - \
    QUATRE_CUDA_PDL=1 QUATRE_CUDA_MLA_SPLIT_SCORES=0 "$old" QUATRE_CUDA_MLA_TC_KEYS=32 > "$out/mla.txt" 2>&1
  tail -30 "$out/mla.txt"
fi
echo "== done in $SECONDS s"
