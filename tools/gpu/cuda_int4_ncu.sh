#!/usr/bin/env bash
# On a GPU host, from the repo root, one device call (binaries packed by tools/gpu/pack.sh with quatre-bench and
# the CUDA tests wanted; carry .gpu/pack): the packed CUDA tests (cuda_check.sh), the vision tower's bench, the
# whole 4-bit model at batch 1 and 64 profiled op by op, then Nsight Compute on the routed experts' small
# tensor-core kernel at batch 64 (2-layer models): the 4-bit body (one BF16 activation plane, XMode::kTerms1) and,
# to compare, the FP8 model's launches of the same kernel. Logs and ncu reports under OUT_DIR; tables on stdout.
#   run tool: command "bash tools/gpu/cuda_int4_ncu.sh $OUT", carry [".gpu/pack"]
set -uo pipefail
out=${1:?usage: cuda_int4_ncu.sh OUT_DIR}
mkdir -p "$out"
bash tools/gpu/cuda_check.sh "$out/check" > "$out/check.txt" 2>&1
echo "== cuda_check rc=$?"
grep -E "^== |PASSED|FAILED|Failure" "$out/check.txt" | head -40
source tools/gpu/packed_env.sh > /dev/null
timeout 120 "$bin/quatre-bench" --random-weights --vision 224,1540 --steps 3 > "$out/vision.txt" 2>&1
echo "== bench --vision rc=$?"
tail -4 "$out/vision.txt"
timeout 200 "$bin/quatre-bench" --random-weights --dtype int4 --context 2048 --steps 5 --batch 1,64 --profile \
  > "$out/int4_profile.txt" 2>&1
echo "== int4 profile rc=$?"
grep -E "^ +[0-9]+ |sum of ops" "$out/int4_profile.txt" | head -8
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
for f in ncu_int4 ncu_fp8; do
  echo "== $f"
  grep -E "small_tc_kernel|Duration|DRAM Throughput|Memory Throughput|Registers Per|Achieved Occupancy|Issue Slots Busy|No Eligible|Grid Size" \
    "$out/$f.txt" | sed -E "s/  +/ /g" | cut -c1-160 | head -60
done
