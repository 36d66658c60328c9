#!/usr/bin/env bash
# On a GPU host, from the repo root, one device call (binaries packed by tools/gpu/pack.sh with quatre-bench and the
# CUDA tests wanted; carry .gpu/pack): the packed CUDA tests (cuda_check.sh), the vision tower's bench (its attention
# on the tensor cores, BF16 and fp32 operands, and on the CUDA cores; one run profiled), the whole 4-bit model at
# batch 1-128 (beside a baseline binary when packed in .gpu/cuda/base), with the experts' int8 activations
# (QUATRE_CUDA_INT4_ACT=q8), and at batch 1 and 64 profiled op by op, then Nsight Compute on the routed experts' small
# tensor-core kernel at batch 64 (2-layer models): the 4-bit body (one BF16 activation plane, XMode::kTerms1), the q8
# body (XMode::kQ8) and, to compare, the FP8 model's launches of the same kernel. Logs and ncu reports under OUT_DIR;
# tables on stdout. PARTS (default "check vision int4 ncu") picks which of the four run.
#   run tool: command "bash tools/gpu/cuda_int4_ncu.sh $OUT", carry [".gpu/pack"]
set -uo pipefail
out=${1:?usage: cuda_int4_ncu.sh OUT_DIR}
mkdir -p "$out"
parts=" ${PARTS:-check vision int4 ncu} "
part() { [[ "$parts" == *" $1 "* ]]; }
if part check; then
  bash tools/gpu/cuda_check.sh "$out/check" > "$out/check.txt" 2>&1
  echo "== cuda_check rc=$?"
  grep -E "^== |PASSED|FAILED|Failure" "$out/check.txt" | head -40
fi
source tools/gpu/packed_env.sh > /dev/null
# The tower's attention on the tensor cores with BF16 operands (the default), fp32 ones (three terms), and the fp32
# CUDA-core kernel it replaced (QUATRE_CUDA_VISION_TC=0); the default profiled.
part vision && for v in "bf16 1" "fp32 1" "fp32 0"; do
  set -- $v
  QUATRE_CUDA_VISION_TC=$2 timeout 120 "$bin/quatre-bench" --random-weights --vision 224,448,1036,1540 --steps 3 \
    --attention-operands "$1" > "$out/vision_$1_$2.txt" 2>&1
  echo "== bench --vision, operands $1, tensor cores $2: rc=$?"
  grep -E "^ +[0-9]+x[0-9]+" "$out/vision_$1_$2.txt"
done
if part vision; then
  timeout 60 "$bin/quatre-bench" --random-weights --vision 1540 --steps 1 --profile > "$out/vision_profile.txt" 2>&1
  grep -E "^    " "$out/vision_profile.txt" | head -12
fi
# The whole 4-bit model: a baseline binary (.gpu/cuda/base/quatre-bench, when packed) and the packed one at decode
# batch 1-128, then the packed one profiled at batch 1 and 64.
int4=(--random-weights --dtype int4 --context 2048 --steps 5)
part int4 && for b in .gpu/cuda/base/quatre-bench "$bin/quatre-bench"; do
  [ -x "$b" ] || continue
  name=$(basename "$(dirname "$b")")
  timeout 100 "$b" "${int4[@]}" --batch 1,16,64,128 > "$out/int4_$name.txt" 2>&1
  echo "== int4 decode, $name binary: rc=$?"
  grep -E "^ +[0-9]+ " "$out/int4_$name.txt" | head -6
done
# The packed binary with the 4-bit experts' activations in int8 blocks (QUATRE_CUDA_INT4_ACT=q8: the staged kernel at
# batch 1, the small tensor-core kernel's u8·s8 body above), then both profiled at batch 1 (and the default at 64).
if part int4; then
  QUATRE_CUDA_INT4_ACT=q8 timeout 100 "$bin/quatre-bench" "${int4[@]}" --batch 1,16,64,128 > "$out/int4_q8.txt" 2>&1
  echo "== int4 decode, QUATRE_CUDA_INT4_ACT=q8: rc=$?"
  grep -E "^ +[0-9]+ " "$out/int4_q8.txt" | head -6
  timeout 120 "$bin/quatre-bench" "${int4[@]}" --batch 1,64 --profile > "$out/int4_profile.txt" 2>&1
  echo "== int4 profile rc=$?"
  grep -E "moe|sum of ops" "$out/int4_profile.txt" | head -8
  QUATRE_CUDA_INT4_ACT=q8 timeout 100 "$bin/quatre-bench" "${int4[@]}" --batch 1 --profile > "$out/int4_q8_profile.txt" 2>&1
  echo "== int4 q8 profile rc=$?"
  grep -E "moe|sum of ops" "$out/int4_q8_profile.txt" | head -8
fi
part ncu || exit 0
ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
sections=(--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats
  --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis_Tables --section SourceCounters)
small=(--random-weights --layers 2 --batch 64 --context 1024 --steps 1 --no-graphs)
timeout 150 "$ncu" --kernel-name-base demangled -k "regex:small_tc_kernel.*(kTerms1|XMode\)4)" --launch-count 2 \
  --clock-control none "${sections[@]}" "$bin/quatre-bench" "${small[@]}" --dtype int4 > "$out/ncu_int4.txt" 2>&1
echo "== ncu int4 rc=$?"
timeout 150 "$ncu" -k "regex:small_tc_kernel" --launch-count 8 --clock-control none "${sections[@]}" \
  "$bin/quatre-bench" "${small[@]}" > "$out/ncu_fp8.txt" 2>&1
echo "== ncu fp8 rc=$?"
QUATRE_CUDA_INT4_ACT=q8 timeout 150 "$ncu" --kernel-name-base demangled -k "regex:small_tc_kernel.*(kQ8|XMode\)5)" \
  --launch-count 2 --clock-control none "${sections[@]}" "$bin/quatre-bench" "${small[@]}" --dtype int4 \
  > "$out/ncu_int4_q8.txt" 2>&1
echo "== ncu int4 q8 rc=$?"
for f in ncu_int4 ncu_int4_q8 ncu_fp8; do
  echo "== $f"
  grep -E "small_tc_kernel|Duration|DRAM Throughput|Memory Throughput|Registers Per|Achieved Occupancy|Issue Slots Busy|No Eligible|Grid Size" \
    "$out/$f.txt" | sed -E "s/  +/ /g" | cut -c1-160 | head -60
done
