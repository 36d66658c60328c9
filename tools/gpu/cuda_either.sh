#!/usr/bin/env bash
# On a GPU host, from the repo root, one device call that makes the best of whichever card came (binaries packed
# by tools/gpu/pack.sh with quatre-bench and the CUDA tests wanted; carry .gpu/pack):
#   - a card that holds the whole FP8 model (H200): the 4-bit tests and prompts (cuda_int4_prefill.sh: a prompt's
#     experts in wide groups on and off, the BF16 plane), then the 36-layer FP8 figures of issue #6 (cuda_h200.sh
#     --quick: decode at batch 1-256, prefill 1K/8K, W8A16, a 256K-token context, prompts of 32K and 128K);
#   - else (H100): cuda_int4_prefill.sh alone.
# Logs under OUT_DIR; tables on stdout.
#   run tool: command "bash tools/gpu/cuda_either.sh $OUT", carry [".gpu/pack"]
set -uo pipefail
out=${1:?usage: cuda_either.sh OUT_DIR}
mkdir -p "$out"
mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
bash tools/gpu/cuda_int4_prefill.sh "$out"
if [ "${mib:-0}" -ge 120000 ]; then
  bash tools/gpu/cuda_h200.sh "$out/h200" --quick
fi
