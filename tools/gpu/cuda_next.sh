#!/usr/bin/env bash
# On a GPU host, from the repo root, one device call (binaries packed by tools/gpu/pack.sh with bench_serve, carry
# .gpu/pack): session 12's MLA work checked and measured, on whichever card comes. The CUDA tests; on a card that
# holds the whole FP8 model (H200) the serving engine under load at full size (issue #7); then the A/B of the old
# one-token MLA settings against the new defaults at batch 1 and 8 (16 layers, context 2048); W8A8 against W8A16
# (--fp8-activations) at prefill 8K and decode batch 1/64/256 with their profiles; and, on an H100 with time left,
# session 11's 4-bit small-batch threshold. The tables on stdout, the
# logs under OUT_DIR (only what fits the returned files: summaries, not every log).
#   run tool: command "bash tools/gpu/cuda_next.sh $OUT", carry [".gpu/pack"], timeout_s 580
set -uo pipefail
out=${1:?usage: cuda_next.sh OUT_DIR}
mkdir -p "$out" /tmp/k
source tools/gpu/packed_env.sh
full=0
[ ${#layers[@]} -eq 0 ] && full=1
if [ $full = 1 ]; then
  timeout 150 bash tools/gpu/cuda_check.sh /tmp/k/check > "$out/check.txt" 2>&1
  echo "== tests rc=$?"
  grep -E "^\[  (PASSED|FAILED)|Failure|exception" "$out/check.txt" | sort | uniq -c | head -20
  bash tools/gpu/cuda_serve.sh /tmp/k/serve 64 128 --temperature 0 > "$out/serve.txt" 2>&1
  cat "$out/serve.txt"
  export GPU_LAYERS=16 KNOBS_TESTS=0  # the H100's depth, for the A/B below
fi
old="QUATRE_CUDA_MLA_TC_KEYS=64 QUATRE_CUDA_MLA_QABS_SMALL=0 QUATRE_CUDA_MLA_COMBINE_PREFETCH=0"
KNOBS_BATCH=1,8 KNOBS_CONTEXT=2048 timeout 330 bash tools/gpu/cuda_knobs.sh /tmp/k/mla - "$old" \
  QUATRE_CUDA_MLA_TC_KEYS=32 QUATRE_CUDA_MLA_COMBINE_PREFETCH=0 > "$out/mla.txt" 2>&1
cp /tmp/k/mla/check.txt "$out/" 2>/dev/null
tail -40 "$out/mla.txt"
source tools/gpu/packed_env.sh  # GPU_LAYERS, if set above, now applies
# W8A8 (--fp8-activations static: the FP8 mma kernel) against W8A16 at prefill 8K and decode batch 1/64/256.
for act in none static; do
  [ $SECONDS -lt 470 ] || break
  timeout $((500 - SECONDS)) "$bin/quatre-bench" --random-weights "${layers[@]}" --fp8-activations $act --batch 1,64,256 \
    --context 2048 --prefill 8192 --steps 5 --profile > "$out/prefill_$act.txt" 2>&1
  echo "== fp8 activations $act rc=$?"
  grep -vE "^  (op|[a-z])" "$out/prefill_$act.txt" | tail -12
  grep -A14 "prefill T" "$out/prefill_$act.txt" | head -16
done
if [ $full = 0 ] && [ $SECONDS -lt 440 ]; then
  KNOBS_TESTS=0 KNOBS_BATCH=1 KNOBS_INT4=48,64,128 KNOBS_CONTEXT=2048 timeout $((560 - SECONDS)) \
    bash tools/gpu/cuda_knobs.sh /tmp/k/int4 - QUATRE_CUDA_SMALL_TC_MIN_HINT_INT4=3 > "$out/int4.txt" 2>&1
  tail -15 "$out/int4.txt"
fi
echo "== done in $SECONDS s"
