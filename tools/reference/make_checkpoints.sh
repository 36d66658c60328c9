#!/usr/bin/env bash
# Writes the synthetic HF checkpoints the goldens are computed from (see README.md in this folder).
#   bash tools/reference/make_checkpoints.sh OUT_DIR [BUILD_DIR]
# OUT_DIR gets one sub-directory per checkpoint (an existing one of the same name is replaced); BUILD_DIR (default
# build-ref) must hold a built `quatre`, e.g.
#   cmake -S . -B build-ref -G Ninja -DQUATRE_CUDA=OFF && cmake --build build-ref --target quatre
# Keep OUT_DIR out of git (the repository ignores /.gpu/, so .gpu/ckpt is a good place).
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 OUT_DIR [BUILD_DIR]" >&2
  exit 2
fi
out=$1
build=${2:-build-ref}
quatre="$build/quatre"
if [ ! -x "$quatre" ]; then
  echo "$quatre not found: cmake -S . -B $build -G Ninja -DQUATRE_CUDA=OFF && cmake --build $build --target quatre" >&2
  exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$out"

gen() {
  local name=$1
  shift
  rm -rf "${out:?}/${name:?}"
  "$quatre" gen-model "$out/$name" --format hf "$@" | tail -n 1
}

# name                          preset                dtype        seed    (names end up in the golden file names)
gen tiny-hf-bf16-s1             --preset tiny        --dtype bf16 --seed 1
gen tiny-hf-fp8-s1              --preset tiny        --dtype fp8  --seed 1
gen tiny-dense-text-hf-bf16-s2  --preset tiny-dense  --dtype bf16 --seed 2 --text-only
gen tiny-yarn32-hf-bf16-s3      --preset tiny-yarn32 --dtype bf16 --seed 3

echo "weights_fnv1a64 (the goldens record the same values):"
python3 "$here/make_goldens.py" --hash \
  "$out/tiny-hf-bf16-s1" "$out/tiny-hf-fp8-s1" "$out/tiny-dense-text-hf-bf16-s2" "$out/tiny-yarn32-hf-bf16-s3"
