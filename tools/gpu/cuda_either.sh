#!/usr/bin/env bash
# On a GPU host, from the repo root, one device call that makes the best of whichever card came (binaries packed
# by tools/gpu/pack.sh with quatre-bench, test_cuda_int4, test_cuda_matmul, test_cuda_vision, test_vision_golden_cuda;
# carry .gpu/pack): first, on any card, the vision tower on CUDA (its tests, then quatre bench --vision: the real
# tower on one image of 224 to 1540 px); then
#   - a card that holds the whole FP8 model (H200): the 36-layer FP8 figures of issue #6 (cuda_h200.sh --quick:
#     decode at batch 1-256, prefill 1K/8K, W8A16, a 256K-token context, prompts of 32K and 128K), then the 4-bit
#     tests;
#   - else (H100): the 4-bit work of issue #11 (cuda_int4_next.sh: its tests, the whole 4-bit model's figures).
# A second call on the same warm card with SECOND=1 runs the other half. Logs under OUT_DIR; tables on stdout.
#   run tool: command "bash tools/gpu/cuda_either.sh $OUT", carry [".gpu/pack"]
set -uo pipefail
out=${1:?usage: cuda_either.sh OUT_DIR}
mkdir -p "$out"
if [ "${SECOND:-0}" != 1 ]; then
  (
    source tools/gpu/packed_env.sh > /dev/null
    for t in test_cuda_vision test_vision_golden_cuda; do
      [ -x "$bin/$t" ] || continue
      timeout 120 "$bin/$t" --gtest_brief=1 > "$out/$t.log" 2>&1
      echo "== $t rc=$?"
      grep -E "FAILED|Failure|Expected|Which|PASSED|error|exception" "$out/$t.log" | head -12
    done
    timeout 120 "$bin/quatre-bench" --random-weights --vision 224,448,1036,1540 --steps 3 > "$out/vision.txt" 2>&1
    echo "== bench --vision rc=$?"
    tail -8 "$out/vision.txt"
  )
fi
mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
big=0
[ "${mib:-0}" -ge 120000 ] && big=1
[ "${SECOND:-0}" = 1 ] && big=$((1 - big))
if [ "$big" = 1 ]; then
  bash tools/gpu/cuda_h200.sh "$out/h200" --quick
  source tools/gpu/packed_env.sh > /dev/null
  timeout 150 "$bin/test_cuda_int4" --gtest_brief=1 > "$out/test_cuda_int4.log" 2>&1
  echo "== test_cuda_int4 rc=$?"
  grep -E "FAILED|Failure|Expected|Which|PASSED" "$out/test_cuda_int4.log" | head -14
else
  bash tools/gpu/cuda_int4_next.sh "$out/int4"
fi
