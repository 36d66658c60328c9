#!/usr/bin/env bash
# Configures and builds one preset (default: "default"; "asan" for the sanitizer build).
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-default}
launcher=()
# ccache keyed on paths relative to the checkout, so a fresh clone elsewhere reuses the cache.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
cmake --preset "$preset" "${launcher[@]}" >/dev/null
cmake --build --preset "$preset" -j "$(nproc)"
