#!/usr/bin/env bash
# On a GPU host with Nsight Compute (ncu), from the repo root, one device call (binaries packed by tools/gpu/pack.sh,
# carry .gpu/pack): Nsight Compute's detail sections (speed of light, memory, warp states, scheduler, occupancy,
# launch) for one launch of each kernel whose name matches a REGEX, in a batch-B decode step (no graphs) of a 2-layer
# FP8 model at context 1024: the launch after SKIP matching ones (REGEX@SKIP; default 2). Reports under OUT_DIR;
# their metric lines on stdout. NCU_BENCH_ARGS adds quatre-bench options (e.g. "--dtype int4"); NCU_NAME_BASE=demangled
# matches REGEX against the kernel's name with its template arguments (default: the function name alone).
#   run tool: command "bash tools/gpu/cuda_ncu_kernel.sh $OUT 1 mla_combine small_m_kernel@26", carry [".gpu/pack"]
set -uo pipefail
out=${1:?usage: cuda_ncu_kernel.sh OUT_DIR BATCH REGEX...}
B=${2:?usage: cuda_ncu_kernel.sh OUT_DIR BATCH REGEX...}
shift 2
mkdir -p "$out"
read -r -a extra <<< "${NCU_BENCH_ARGS:-}"
source tools/gpu/packed_env.sh
ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
for spec in "$@"; do
  regex=${spec%@*}
  skip=2
  [ "$spec" = "$regex" ] || skip=${spec##*@}
  report="$out/ncu_$(echo "$regex" | tr -c 'A-Za-z0-9_\n' _ | cut -c1-40)_${skip}_b$B.txt"
  timeout 200 "$ncu" --kernel-name-base "${NCU_NAME_BASE:-function}" -k "regex:$regex" --launch-skip "$skip" --launch-count 1 --clock-control none \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
    --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis_Tables --section SourceCounters \
    "$bin/quatre-bench" --random-weights --layers 2 --batch "$B" --context 1024 --steps 1 --no-graphs ${extra[@]+"${extra[@]}"} > "$report" 2>&1
  echo "== $regex (after $skip) batch $B rc=$?"
  grep -E "^  [A-Za-z].*  +[0-9.,]+$|^    [A-Z][a-z]+.*[0-9]|void|Section:" "$report" | grep -vE "^==PROF==" |
    sed -E "s/  +/ /g" | cut -c1-150 | head -60
  grep -E "^    (WRN|OPT|INF)|stall|Stall" "$report" | sed -E "s/  +/ /g" | cut -c1-300 | head -12
done
