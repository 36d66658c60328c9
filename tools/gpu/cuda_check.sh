#!/usr/bin/env bash
# On a GPU host, from the repo root: the CUDA backend's tests (label gpu) from binaries packed here by
# tools/gpu/pack.sh (carry .gpu/pack). Logs to OUT_DIR. Exit status: non-zero when any test failed.
#   run tool: command "bash tools/gpu/cuda_check.sh $OUT", carry [".gpu/pack"] (or [".gpu/cuda/bin"])
set -uo pipefail
out=${1:-/tmp/cuda_check}
mkdir -p "$out"
source tools/gpu/packed_env.sh  # $bin, unpacked from .gpu/pack when carried so
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
status=0
for t in test_cuda_smoke test_cuda_ops test_cuda_matmul test_cuda_int4 test_cuda_sampling test_cuda_vision test_step_graphs_cuda test_golden_cuda test_generate_cuda test_vision_golden_cuda; do
  [ -x "$bin/$t" ] || { echo "== $t: not packed"; continue; }
  echo "== $t"
  "$bin/$t" --gtest_brief=1 > "$out/$t.log" 2>&1 || status=1
  grep -E '^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|Failure|error|exception|Expected|Which is|== crash|\(\+0x' "$out/$t.log" | head -60
  tail -3 "$out/$t.log"
done
# The whole model's paths again with plain launches (dependent launches, pdl.cuh, are the default).
for t in test_step_graphs_cuda test_golden_cuda; do
  [ -x "$bin/$t" ] || continue
  echo "== $t (QUATRE_CUDA_PDL=0)"
  QUATRE_CUDA_PDL=0 "$bin/$t" --gtest_brief=1 > "$out/$t.pdl.log" 2>&1 || status=1
  grep -E '^\[  FAILED|Failure|exception' "$out/$t.pdl.log" | head -20
  tail -3 "$out/$t.pdl.log"
done
exit $status
