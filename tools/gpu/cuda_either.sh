#!/usr/bin/env bash
# On a GPU host, from the repo root, one device call that makes the best of whichever card came (binaries packed
# by tools/gpu/pack.sh with test_cuda_int4, test_cuda_matmul, quatre-bench and bench_serve; carry .gpu/pack):
#   - a card that holds the whole FP8 model (H200): the 36-layer FP8 figures of issue #6 (cuda_h200.sh --quick:
#     decode at batch 1-256, prefill 1K/8K, W8A16, a 256K-token context, prompts of 32K and 128K), issue #7's
#     serving engine under load (cuda_serve.sh, 64 concurrent requests), then batch 1 with the staged kernel's
#     streamed form (QUATRE_CUDA_STAGED_STREAM=2, 3) and its 8192-byte rows (QUATRE_CUDA_STAGED_LONG_ROWS=1); the
#     4-bit prompts take a second call (`cuda_either.sh OUT --int4`, on the same warm card);
#   - else (H100), or with --int4: the 4-bit tests and prompts (cuda_int4_prefill.sh: a prompt's experts in wide
#     groups on and off, the BF16 plane, decode at batch 64 profiled).
# Logs under OUT_DIR; tables on stdout.
#   run tool: command "bash tools/gpu/cuda_either.sh $OUT [--int4]", carry [".gpu/pack"]
set -uo pipefail
out=${1:?usage: cuda_either.sh OUT_DIR [--int4]}
mkdir -p "$out"
mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
if [ "${mib:-0}" -ge 120000 ] && [ "${2:-}" != --int4 ]; then
  bash tools/gpu/cuda_h200.sh "$out/h200" --quick
  bash tools/gpu/cuda_serve.sh "$out/serve" 64 128 --temperature 0
  bash tools/gpu/staged_b1.sh "$out/h200"
else
  bash tools/gpu/cuda_int4_prefill.sh "$out"
fi
