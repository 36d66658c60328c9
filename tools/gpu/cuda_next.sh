#!/usr/bin/env bash
# On a GPU host, from the repo root, one device call (binaries packed by tools/gpu/pack.sh; carry .gpu/pack): the
# open questions, most needed first, on whichever card comes (16 layers, context 2048 on a card that cannot hold the
# whole model; GPU_LAYERS to choose). The CUDA tests (test_cuda_matmul's log kept whole: a crash prints a native
# backtrace); then decode and prefill with the defaults, decode with the MLA combine a block a token
# (QUATRE_CUDA_MLA_COMBINE_TOKENS=0) and with W8A16 and fp32 attention operands. LIMIT: the seconds the call may run (default 560); what
# would not fit is skipped. The tables on stdout, the logs under OUT_DIR.
#   run tool: command "bash tools/gpu/cuda_next.sh $OUT 560", carry [".gpu/pack"], timeout_s 580
set -uo pipefail
out=${1:?usage: cuda_next.sh OUT_DIR [LIMIT]}
mkdir -p "$out" /tmp/k
source tools/gpu/packed_env.sh
limit=${2:-560}  # the call's seconds: later parts are skipped when they would not fit
left() { echo $((limit - SECONDS)); }
if [ "${CUDA_NEXT_TESTS:-1}" = 1 ]; then
  timeout $((limit < 400 ? limit / 2 : 200)) bash tools/gpu/cuda_check.sh /tmp/k/check > "$out/check.txt" 2>&1
  echo "== tests rc=$? ($SECONDS s)"
  grep -E "^== |^\[  (PASSED|FAILED)|Failure|exception" "$out/check.txt" | grep -v "^== device" | paste -sd' ' | head -c 1500
  echo
  cp /tmp/k/check/test_cuda_matmul.log "$out/" 2>/dev/null
  if grep -q "== crash" /tmp/k/check/test_cuda_matmul.log 2>/dev/null; then
    grep -B3 -A30 "== crash" /tmp/k/check/test_cuda_matmul.log | head -50
  fi
fi
run_bench() {  # NAME ENV-SETTING BENCH-ARGS...
  local name=$1 setting=$2
  shift 2
  [ "$(left)" -gt 40 ] || return
  env_args=()
  [ "$setting" = - ] || read -ra env_args <<< "$setting"
  timeout $(($(left) < 100 ? $(left) - 10 : 90)) env "${env_args[@]}" "$bin/quatre-bench" --random-weights \
    "${layers[@]}" --context 2048 --steps 5 "$@" > "$out/$name.txt" 2>&1
  echo "== $name ($setting $*): rc=$? ($SECONDS s)"
  grep -E "^ +[0-9]+ +2048 " "$out/$name.txt" | awk '{print "   B=" $1, $3 " ms", $4 " tok/s"}'
  grep -A1 "prefill T" "$out/$name.txt" | tail -1
}
batches=${CUDA_NEXT_BATCHES:-1,8,16,64,256}
# Decode and prefill with the defaults (W8A8, BF16 attention operands; the MLA combine a block per (head, 16 tokens)
# from 16 tokens), then decode with the combine a block per token (QUATRE_CUDA_MLA_COMBINE_TOKENS=0) and with W8A16
# and fp32 operands; the batch-1 profile of the defaults.
run_bench defaults - --batch "$batches" --prefill 1024,8192,32768 --profile
grep -A4 "prefill T" "$out/defaults.txt" | tail -3
run_bench combine_per_token QUATRE_CUDA_MLA_COMBINE_TOKENS=0 --batch "$batches"
run_bench w8a16 - --fp8-activations none --attention-operands fp32 --batch "$batches"
echo "== defaults: batch-1 profile (top ops)"
awk '/^  op/{n++} n==1' "$out/defaults.txt" | head -24
echo "== done in $SECONDS s"
