#!/usr/bin/env bash
# On an H200 (one card that holds the whole FP8 model), from the repo root, one device call (binaries packed by
# tools/gpu/pack.sh, carry .gpu/pack): the full-size figures of issues #6 and #7 with the defaults (W8A8, BF16
# attention operands) — decode at batch 1-256 and 2K context with the batch-1 profile, prefill 1K/8K, the same with
# W8A16 and fp32 operands, one 256K-token context decoding, prefill of 32K and 128K prompts (in chunks of 8192), and
# the serving engine under load (greedy), after the CUDA tests. Logs under OUT_DIR; the tables on stdout.
# --quick: no tests (they ran on another card of this build) and no serving engine (~250 s); --no-serve: tests and
# figures without the serving engine; --serve: the serving engine alone (the two halves fit the 600 s of a call each).
#   run tool: command "bash tools/gpu/cuda_h200.sh $OUT [--quick|--no-serve|--serve]", carry [".gpu/pack"], needs_h200 true
set -uo pipefail
out=${1:?usage: cuda_h200.sh OUT_DIR [--quick|--no-serve|--serve]}
quick=${2:-}
mkdir -p "$out"
source tools/gpu/packed_env.sh
[ ${#layers[@]} -eq 0 ] || { echo "this card cannot hold the full model: use cuda_final.sh"; exit 2; }
if [ "$quick" = --serve ]; then
  bash tools/gpu/cuda_serve.sh "$out/serve" 64 128 --temperature 0
  exit
fi
if [ "$quick" != --quick ]; then
  timeout 100 bash tools/gpu/cuda_check.sh "$out/check" > "$out/check.txt" 2>&1
  echo "== tests rc=$?"
  grep -E "^\[  (PASSED|FAILED)|exception" "$out/check.txt" | sort | uniq -c
fi
profile=(--profile)
[ "$quick" = --quick ] && profile=()
timeout 150 "$bin/quatre-bench" --random-weights --batch 1,8,32,64,128,256 --context 2048 --prefill 1024,8192 \
  --steps 5 "${profile[@]}" > "$out/bench.txt" 2>&1
echo "== bench rc=$?"
grep -vE "^  (op|[a-z])" "$out/bench.txt"
awk '/^  op/{c++} c==1' "$out/bench.txt" | head -14
# The defaults are the release's numerics as vLLM runs them (W8A8 linears, BF16 attention operands); beside them
# W8A16 with fp32 operands, the transformers goldens' numerics.
timeout 80 "$bin/quatre-bench" --random-weights --fp8-activations none --attention-operands fp32 --batch 1,64,256 \
  --context 2048 --prefill 1024,8192 --steps 5 > "$out/bench_w8a16.txt" 2>&1
echo "== W8A16 + fp32 attention operands rc=$?"
grep -vE "^  (op|[a-z])" "$out/bench_w8a16.txt" | tail -9
timeout 90 "$bin/quatre-bench" --random-weights --batch 1 --context 262144 --prefill 1024 --steps 3 > "$out/long.txt" 2>&1
echo "== 256K context rc=$?"
grep -vE "^  (op|[a-z])" "$out/long.txt" | tail -6
# Time to first token of long prompts, in the forwards of 8192 tokens a step the server would run with that budget
# (the defaults: the fast prompt path).
timeout 150 "$bin/quatre-bench" --random-weights --batch 1 \
  --context 1024 --prefill 32768,131072 --prefill-chunk 8192 --steps 2 > "$out/long_prefill.txt" 2>&1
echo "== prefill 32K, 128K rc=$?"
grep -A3 "^prefill T" "$out/long_prefill.txt"
nvidia-smi --query-gpu=clocks.sm,clocks.mem --format=csv,noheader
[ "$quick" = --no-serve ] || [ "$quick" = --quick ] || bash tools/gpu/cuda_serve.sh "$out/serve" 64 128 --temperature 0
