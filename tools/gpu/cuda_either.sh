#!/usr/bin/env bash
# On a GPU host, from the repo root, one device call that makes the best of whichever card came (binaries packed
# by tools/gpu/pack.sh with quatre-bench and the CUDA tests wanted, a baseline quatre-bench in .gpu/cuda/base if
# any; carry .gpu/pack):
#   - a card that holds the whole FP8 model (H200): the packed tests and the 4-bit model with and without the int8
#     activations (cuda_int4_ncu.sh's parts check and int4), then the 36-layer FP8 figures of issue #6
#     (cuda_h200.sh --quick: decode at batch 1-256, prefill 1K/8K, W8A16, a 256K-token context, prompts of 32K and
#     128K);
#   - else (H100): cuda_int4_ncu.sh whole (the tests, the vision bench, the 4-bit model against the baseline, with
#     and without the int8 activations, profiled, Nsight Compute on the 4-bit bodies).
# Logs under OUT_DIR; tables on stdout.
#   run tool: command "bash tools/gpu/cuda_either.sh $OUT", carry [".gpu/pack"]
set -uo pipefail
out=${1:?usage: cuda_either.sh OUT_DIR}
mkdir -p "$out"
mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
if [ "${mib:-0}" -ge 120000 ]; then
  PARTS="check int4" bash tools/gpu/cuda_int4_ncu.sh "$out"
  bash tools/gpu/cuda_h200.sh "$out/h200" --quick
else
  bash tools/gpu/cuda_int4_ncu.sh "$out"
fi
