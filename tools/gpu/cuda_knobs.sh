#!/usr/bin/env bash
# On a GPU host, from the repo root, one device call (binaries packed by tools/gpu/pack.sh, carry .gpu/pack): the
# CUDA tests (skipped with KNOBS_TESTS=0), then decode at batch 1/8/64 (FP8, 16 layers where 36 do not fit, context
# 1024; KNOBS_BATCH and KNOBS_CONTEXT change them) for each baseline binary (.gpu/cuda/base/quatre-bench*, if packed) and for the packed one under each
# environment setting given (e.g. "QUATRE_CUDA_SMALLM_LANES=8", or several in one argument separated by spaces; "-" for none), each in its own process; the batch-1
# and -64 profile of the first setting; with KNOBS_PROFILE_ALL=1 the batch-1 profile's top ops of every run; with
# KNOBS_INT4=BATCHES (e.g. 1,8,64) each setting also on the whole 4-bit model (--dtype int4, 36 layers); the
# decode rows of every run last.
#   run tool: command "bash tools/gpu/cuda_knobs.sh $OUT - QUATRE_CUDA_SMALLM_LANES=8 ...", carry [".gpu/pack"]
set -uo pipefail
out=${1:?usage: cuda_knobs.sh OUT_DIR SETTING...}
shift
mkdir -p "$out"
source tools/gpu/packed_env.sh
if [ "${KNOBS_TESTS:-1}" != 0 ]; then
  timeout 200 bash tools/gpu/cuda_check.sh "$out/check" > "$out/check.txt" 2>&1
  echo "== tests rc=$?"
  grep -E "^== |^\[  (PASSED|FAILED)|Failure|exception" "$out/check.txt" | grep -v "^== device" | paste -sd' ' | head -c 1500
  echo
fi
batch=${KNOBS_BATCH:-1,8,64} context=${KNOBS_CONTEXT:-1024}
# Both binaries with the same numerics (the defaults since 127a6b6; an older baseline's were W8A16 and fp32):
numerics=(--fp8-activations static --attention-operands bf16)
args=(--random-weights "${layers[@]}" "${numerics[@]}" --batch "$batch" --context "$context" --steps 5)
# The batch-1 profile's ten costliest ops, one line each: name, ms, GB/s.
top_ops() { awk '/^  op/{c++; next} c==1 && /^  [a-z]/' "$1" | head -10 | sed -E 's/  +/ /g' | awk '{printf "   %s\n", $0}'; }
runs=()
for b in .gpu/cuda/base/quatre-bench*; do
  [ -x "$b" ] || continue
  name=base${b#.gpu/cuda/base/quatre-bench}
  timeout 60 "$b" "${args[@]}" > "$out/$name.txt" 2>&1
  if [ "${KNOBS_PROFILE_ALL:-0}" = 1 ]; then
    timeout 60 "$b" "${args[@]}" --batch 1 --profile > "$out/$name.prof" 2>&1
  fi
  runs+=("$name")
done
i=0
for setting in "$@"; do
  i=$((i + 1))
  env_args=()
  [ "$setting" = - ] || read -ra env_args <<< "$setting"  # "A=1 B=2": both
  timeout 60 env "${env_args[@]}" "$bin/quatre-bench" "${args[@]}" > "$out/run$i.txt" 2>&1
  if [ "${KNOBS_PROFILE_ALL:-0}" = 1 ]; then
    timeout 60 env "${env_args[@]}" "$bin/quatre-bench" "${args[@]}" --batch 1 --profile > "$out/run$i.prof" 2>&1
  fi
  echo "run$i: $setting" >> "$out/runs.txt"
  runs+=("run$i")
  if [ -n "${KNOBS_INT4:-}" ]; then
    timeout 150 env "${env_args[@]}" "$bin/quatre-bench" --random-weights --dtype int4 --batch "$KNOBS_INT4" \
      --context "$context" --steps 5 > "$out/run${i}_int4.txt" 2>&1
    echo "run${i}_int4: $setting, 4-bit model" >> "$out/runs.txt"
    runs+=("run${i}_int4")
  fi
done
first=${1:--}
[ "$first" = - ] && first=
timeout 60 env $first "$bin/quatre-bench" "${args[@]}" --batch 1,64 --profile > "$out/profile.txt" 2>&1
awk '/^  op/{c++} c==1' "$out/profile.txt" | head -16
awk '/^  op/{c++} c==2' "$out/profile.txt" | head -12
cat "$out/runs.txt"
for r in "${runs[@]}"; do
  echo "== $r"
  grep -E "^ +[0-9]+ +$context " "$out/$r.txt" | awk '{print "   B=" $1, $3 " ms", $4 " tok/s", $8}'
  [ -f "$out/$r.prof" ] && top_ops "$out/$r.prof"
done
