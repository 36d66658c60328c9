#!/usr/bin/env bash
# On a GPU host, from the repo root (binaries packed by tools/gpu/pack.sh, carry .gpu/pack): MLA's key pass on the
# tensor cores (default) against the CUDA-core tiled kernel (QUATRE_CUDA_MLA_TC=0), FP8 weights (16 layers where 36
# do not fit), BF16 latent cache: decode at batch 1, 64 and 256 with a 2K context and batch 1 with a 32K one, each
# setting in its own process; the decode rows and the profile's mla lines of each. Logs under OUT_DIR.
#   run tool: command "bash tools/gpu/cuda_attend_ab.sh $OUT", carry [".gpu/pack"]
set -uo pipefail
out=${1:?usage: cuda_attend_ab.sh OUT_DIR}
mkdir -p "$out"
source tools/gpu/packed_env.sh
for setting in QUATRE_CUDA_MLA_TC=0 QUATRE_CUDA_MLA_TC=1; do
  name=${setting#QUATRE_CUDA_MLA_TC=}
  timeout 120 env "$setting" "$bin/quatre-bench" --random-weights "${layers[@]}" --batch 1,64,256 --context 2048 \
    --steps 5 --profile > "$out/tc$name.txt" 2>&1
  timeout 60 env "$setting" "$bin/quatre-bench" --random-weights "${layers[@]}" --batch 1 --context 32768 \
    --steps 5 --profile > "$out/tc$name-32k.txt" 2>&1
  echo "== $setting"
  for f in "$out/tc$name.txt" "$out/tc$name-32k.txt"; do
    grep -E "^ +[0-9]+ +[0-9]+ +[0-9.]+ " "$f" | awk '{print "   B=" $1, "ctx=" $2, $3 " ms", $4 " tok/s"}'
    grep -E "^  mla (attend|combine)" "$f" | sed -E 's/  +/ /g; s/^/   /'
  done
done
