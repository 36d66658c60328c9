#!/usr/bin/env bash
# On a GPU host, from the repo root, one device call (binaries packed by tools/gpu/pack.sh, carry .gpu/pack with
# .gpu/cuda/base): the CUDA tests, then decode at batch 1/8/64 (FP8, 16 layers where 36 do not fit, context 1024)
# for the baseline binary .gpu/cuda/base/quatre-bench, the packed one op by op (--no-graphs) and the packed one with
# CUDA graphs, each in its own process on the same card; then the batch-1 profile. The tables last.
#   run tool: command "bash tools/gpu/cuda_ab.sh $OUT", carry [".gpu/pack"]
set -uo pipefail
out=${1:?usage: cuda_ab.sh OUT_DIR}
mkdir -p "$out"
source tools/gpu/packed_env.sh
timeout 200 bash tools/gpu/cuda_check.sh "$out/check" > "$out/check.txt" 2>&1
echo "== tests rc=$?"
grep -E "^== |^\[  (PASSED|FAILED)|Failure|Expected|actual|exception" "$out/check.txt" | head -40
# Both binaries with the same numerics (the defaults since 127a6b6; an older baseline's were W8A16 and fp32):
numerics=(--fp8-activations static --attention-operands bf16)
args=(--random-weights "${layers[@]}" "${numerics[@]}" --batch 1,8,64 --context 1024 --steps 7)
for run in base nographs graphs; do
  case $run in
    base) cmd=(.gpu/cuda/base/quatre-bench "${args[@]}") ;;
    nographs) cmd=("$bin/quatre-bench" "${args[@]}" --no-graphs) ;;
    graphs) cmd=("$bin/quatre-bench" "${args[@]}" --prefill 1024) ;;
  esac
  [ -x "${cmd[0]}" ] || { echo "== $run: no binary"; continue; }
  timeout 90 "${cmd[@]}" > "$out/$run.txt" 2>&1
  echo "== $run rc=$?"
done
timeout 60 "$bin/quatre-bench" "${args[@]}" --batch 1 --profile > "$out/profile.txt" 2>&1
echo "== profile rc=$?"
awk '/^  op/{c++} c==1' "$out/profile.txt" | head -24
grep -E "sum of ops" "$out/profile.txt"
for run in base nographs graphs; do
  echo "== $run"
  grep -E "^ +[0-9]+ +[0-9]+ " "$out/$run.txt"
done
