#!/usr/bin/env bash
# On a host with 2+ GPUs, from the repo root: tensor/expert parallelism through NCCL (issue #10; README, "Several GPUs").
#   here:     tools/gpu/pack.sh build-tp test_tensor_parallel_cuda test_golden_cuda quatre bench_serve
#   run tool: kind nvidia-h200-x2 (or nvidia-h100-x2), command "bash tools/gpu/tp_check.sh $OUT", carry [".gpu/pack"]
# 1. the tiny goldens with one GPU per rank (N=2; N=4 where 4 GPUs are visible) and, for reference, on one GPU;
# 2. a full-width FP8 checkpoint of LAYERS layers (default 4, written here by gen-model): `quatre run` greedy on 1 GPU
#    and on N=2, the two continuations compared and the speed lines kept, then bench_serve (64 requests, 16 at once)
#    on 1 and 2 GPUs (the bench lines for bench/RESULTS.md).
# NCCL must be on the host (libnccl.so.2, 218 MB, is more than a device call carries); the script looks in the usual
# places. Logs to OUT_DIR. Exit status: non-zero when a test failed or the continuations differ.
set -uo pipefail
out=${1:-/tmp/tp_check}
layers=${LAYERS:-4}
mkdir -p "$out"
source tools/gpu/packed_env.sh  # $bin (unpacked from .gpu/pack), its libraries on LD_LIBRARY_PATH
export NCCL_NVLS_ENABLE=0  # shared host: no NVLink SHARP multicast (README)
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
# Test binaries read tests/data and write checkpoints through the source dir compiled in (/work/main).
if [ ! -e /work/main/tests/data ]; then mkdir -p /work && ln -sfn "$PWD" /work/main; fi
{ date -u; nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader; nvidia-smi topo -m; } \
  2>&1 | tee "$out/device.txt"

nccl=$( (ldconfig -p 2>/dev/null | awk '/libnccl\.so\.2 /{print $NF}'; \
         ls /usr/lib/x86_64-linux-gnu/libnccl.so.2 /usr/local/cuda*/lib*/libnccl.so.2 \
            /usr/local/lib/python3*/dist-packages/nvidia/nccl/lib/libnccl.so.2 \
            /usr/lib/python3*/dist-packages/nvidia/nccl/lib/libnccl.so.2 2>/dev/null) | head -1)
if [ -z "$nccl" ]; then
  echo "no libnccl.so.2 on this host: --tensor-parallel-size on cuda cannot run here" | tee "$out/nccl.txt"
  exit 2
fi
echo "NCCL: $nccl" | tee "$out/nccl.txt"
export LD_LIBRARY_PATH=$(dirname "$nccl"):$LD_LIBRARY_PATH

status=0
for t in test_tensor_parallel_cuda test_golden_cuda; do
  [ -x "$bin/$t" ] || { echo "== $t: not packed"; status=1; continue; }
  echo "== $t"
  "$bin/$t" --gtest_brief=1 > "$out/$t.log" 2>&1 || status=1
  grep -E '^\[  (PASSED|FAILED|SKIPPED) |Failure|error' "$out/$t.log" | head -40
  tail -3 "$out/$t.log"
done

if [ -x "$bin/quatre" ]; then
  model=$(mktemp -d)/m
  echo "== gen-model mistral-small-4 --layers $layers fp8"
  /usr/bin/time -f "gen-model %e s" "$bin/quatre" gen-model "$model" --preset mistral-small-4 --layers "$layers" \
    --format native --dtype fp8 --text-only --seed 1 2>&1 | tail -2
  prompt="The history of the printing press begins"
  for n in 1 2; do
    echo "== quatre run --tensor-parallel-size $n (cuda, greedy, 128 tokens)"
    # W8A16 with fp32 attention operands: W8A8's roundings can flip with the summation order (README, "FP8
    # activations"), so the default numerics would not give the same continuation on 1 and 2 GPUs.
    "$bin/quatre" run --model "$model" --device cuda --tensor-parallel-size "$n" --raw --prompt "$prompt" \
      --fp8-activations none --attention-operands fp32 --temperature 0 --max-tokens 128 > "$out/run_tp$n.txt" 2> "$out/run_tp$n.err" || status=1
    tail -3 "$out/run_tp$n.err"
  done
  if cmp -s "$out/run_tp1.txt" "$out/run_tp2.txt"; then
    echo "continuations: N=2 == N=1"
  else
    echo "continuations: N=2 differs from N=1 (a near-tie, or a bug: compare $out/run_tp*.txt)"
    status=1
  fi
  if [ -x "$bin/bench_serve" ]; then
    for n in 1 2; do
      echo "== bench_serve --tensor-parallel-size $n"
      "$bin/bench_serve" --model "$model" --device cuda --tensor-parallel-size "$n" --requests 64 --concurrency 16 \
        > "$out/bench_serve_tp$n.txt" 2>&1 || status=1
      tail -8 "$out/bench_serve_tp$n.txt"
    done
  fi
  rm -rf "$(dirname "$model")"
fi
exit $status
