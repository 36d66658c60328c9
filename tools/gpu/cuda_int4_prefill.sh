#!/usr/bin/env bash
# On a GPU host, from the repo root, one device call (binaries packed by tools/gpu/pack.sh with quatre-bench and
# test_cuda_int4; carry .gpu/pack): the 4-bit tests, then the whole 4-bit model's prompts (128-8192 tokens) and decode
# at batch 1 and 64 with the default int8 activations, with them and a prompt's experts in groups of 64 rows on the
# small tensor-core kernel (QUATRE_CUDA_Q8_WIDE=1), and with the BF16 plane (QUATRE_CUDA_INT4_ACT=bf16); prompts
# otherwise through cuBLASLt's BF16 GEMMs from 4096 pairs, groups of 8 below; then with wide groups the 1K and 8K
# prompts profiled op by op, the short prompts with wide groups from 4 and 8 pairs an expert
# (QUATRE_CUDA_Q8_WIDE_FROM), and, where Nsight Systems is installed, the kernels of a batch-1 decode step
# (their own durations, without the profiler's events); decode at batch 64 profiled op by op; batch 1 with the
# staged kernel's tile at 4 and 16 pieces, and Nsight Compute on its 4-bit gated launch. Logs under OUT_DIR; tables on stdout.
#   run tool: command "bash tools/gpu/cuda_int4_prefill.sh $OUT", carry [".gpu/pack"]
set -uo pipefail
out=${1:?usage: cuda_int4_prefill.sh OUT_DIR}
mkdir -p "$out"
bash tools/gpu/cuda_check.sh "$out/check" > "$out/check.txt" 2>&1
echo "== cuda_check rc=$?"
grep -E "^== |PASSED|FAILED|Failure" "$out/check.txt" | grep -v "not packed" | head -20
source tools/gpu/packed_env.sh > /dev/null
int4=(--random-weights --dtype int4 --context 2048)
rows() { grep -E "^ +[0-9]+ " "$1" | head -12; }
for v in "q8 1" "q8 0" "bf16 0"; do
  set -- $v
  QUATRE_CUDA_INT4_ACT=$1 QUATRE_CUDA_Q8_WIDE=$2 timeout 150 "$bin/quatre-bench" "${int4[@]}" --steps 5 --batch 1,64 \
    --prefill 128,256,512,1024,2048,8192 > "$out/prefill_$1_$2.txt" 2>&1
  echo "== int4, activations $1, wide groups $2: rc=$?"
  rows "$out/prefill_$1_$2.txt"
done
timeout 100 "$bin/quatre-bench" "${int4[@]}" --steps 3 --batch 64 --profile > "$out/b64_profile.txt" 2>&1
echo "== int4 q8 decode batch 64 profiled: rc=$?"
grep -A24 -E "^  op +calls" "$out/b64_profile.txt" | head -26
export QUATRE_CUDA_Q8_WIDE=1
timeout 120 "$bin/quatre-bench" "${int4[@]}" --steps 3 --batch 1 --prefill 1024,8192 --profile > "$out/prefill_profile.txt" 2>&1
echo "== int4 q8 prompts profiled: rc=$?"
grep -E "^ +[0-9]+ |moe|attend|sum of ops" "$out/prefill_profile.txt" | grep -v "^ +1 " | head -20
for from in 4 8; do
  QUATRE_CUDA_Q8_WIDE_FROM=$from timeout 100 "$bin/quatre-bench" "${int4[@]}" --steps 3 --batch 1 \
    --prefill 128,256,512 > "$out/wide_from_$from.txt" 2>&1
  echo "== int4 q8, wide groups from $from pairs an expert: rc=$?"
  rows "$out/wide_from_$from.txt" | tail -3
done
# Batch 1's routed experts on the staged kernel: its tile (pieces a thread) 4 and 16 against the default 8, then
# Nsight Compute on the 4-bit gated launch (where its ~1 TB/s goes).
for pcs in 4 16; do
  QUATRE_CUDA_STAGED_PIECES=$pcs timeout 80 "$bin/quatre-bench" "${int4[@]}" --steps 5 --batch 1 > "$out/b1_pieces_$pcs.txt" 2>&1
  echo "== int4 q8 batch 1, staged tile of $pcs pieces: rc=$?"
  rows "$out/b1_pieces_$pcs.txt" | head -2
done
NCU_NAME_BASE=demangled NCU_BENCH_ARGS="--dtype int4" timeout 150 bash tools/gpu/cuda_ncu_kernel.sh "$out/ncu" 1 \
  "staged_kernel<.*true, true>@1" 2>&1 | head -50
nsys=$(command -v nsys || ls /usr/local/cuda/bin/nsys 2>/dev/null || true)
if [ -n "$nsys" ]; then
  timeout 150 "$nsys" profile --cuda-graph-trace=node --trace=cuda -o "$out/b1" --force-overwrite true \
    "$bin/quatre-bench" "${int4[@]}" --steps 20 --batch 1 --prefill 128 > "$out/nsys_run.txt" 2>&1
  echo "== nsys rc=$?"
  timeout 120 "$nsys" stats --report cuda_gpu_kern_sum --format csv "$out/b1.nsys-rep" > "$out/b1_kernels.csv" 2>&1
  python3 - "$out/b1_kernels.csv" <<'EOF'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 8]
if not rows: sys.exit(print(open(sys.argv[1]).read()[-2000:]))
head, body = rows[0], rows[1:]
i_tot, i_n, i_med, i_name = head.index("Total Time (ns)"), head.index("Instances"), head.index("Med (ns)"), head.index("Name")
print(f"{'total ms':>9} {'calls':>7} {'med us':>8}  kernel")
for r in body[:25]:
    print(f"{int(r[i_tot]) / 1e6:9.2f} {r[i_n]:>7} {float(r[i_med]) / 1e3:8.2f}  {r[i_name][:110]}")
EOF
  rm -f "$out/b1.nsys-rep" "$out"/*.sqlite
else
  echo "== no nsys on this host"
fi
