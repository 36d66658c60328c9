#!/usr/bin/env bash
# Builds the CUDA test binaries (and quatre-bench, `quatre bench` alone) here, in BUILD_DIR, and copies them with the shared libraries
# the GPU host lacks (fmt, ...) into .gpu/cuda/bin (+ lib/); then xz-packs bin/ and base/ (a baseline quatre-bench,
# when present) into .gpu/pack/cuda.tar.xz (~3 MB instead of ~40: a device call carries 64 MiB with the tree), which
# the device call carries (carry [".gpu/pack"]) and tools/gpu/packed_env.sh unpacks there.
# Usage: tools/gpu/pack.sh [BUILD_DIR=build-cudah] [TARGET...]
set -euo pipefail
build=${1:-build-cudah}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(test_cuda_smoke test_cuda_ops test_cuda_matmul test_cuda_int4 test_cuda_sampling test_cuda_vision test_step_graphs_cuda test_golden_cuda test_generate_cuda test_vision_golden_cuda quatre-bench bench_serve)
# An object whose compile recorded no header dependencies (its depfile clobbered, e.g. by a hand-run compile command
# with the same -MF) would not be rebuilt when a header changes: a stale kernel with an older struct layout then
# fails on the GPU (session 14: a MatmulProblem field added, matmul.cu.o not rebuilt). Rebuild those.
if [ -f "$build/build.ninja" ]; then
  (cd "$build" && ninja -t deps | awk '/#deps 0,/ {sub(":", "", $1); print $1}' | xargs -r rm -f)
fi
cmake --build "$build" -j2 --target "${targets[@]}"
dest=.gpu/cuda/bin
rm -rf "$dest" && mkdir -p "$dest/lib"
for t in "${targets[@]}"; do
  f=$(find "$build" -type f -name "$t" -perm -u+x | head -1)
  [ -n "$f" ] || { echo "no binary $t under $build" >&2; exit 1; }
  cp "$f" "$dest/"
  # Every non-system library it links (fmt, CLI11, ...); the CUDA runtime is linked statically by default, and
  # cuBLASLt (~540 MB) comes from the GPU host (packed_env.sh).
  ldd "$f" | awk '/=> \// {print $3}' | grep -Ev '/(libc|libm|libpthread|libdl|librt|libgcc_s|libstdc\+\+|ld-linux|libcuda|libcublas|libcublasLt)[.-]' |
    while read -r lib; do cp -L "$lib" "$dest/lib/"; done
done
strip "$dest"/* 2>/dev/null || true  # debug info would pass the 64 MiB a device call carries
echo "$PWD" > "$dest/source_dir"  # the tests read tests/data through the source dir compiled in
mkdir -p .gpu/pack
members=(bin)
[ -d .gpu/cuda/base ] && members+=(base)
tar -C .gpu/cuda -cJf .gpu/pack/cuda.tar.xz "${members[@]}"
du -sh "$dest" .gpu/pack/cuda.tar.xz
