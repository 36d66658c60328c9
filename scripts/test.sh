#!/usr/bin/env bash
# The README's test command: installs what is needed, builds, and runs every test
# (the default build, the CPU tests again under ASan+UBSan, then a short smoke run of the fuzz targets).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh default
ctest --preset default -j "$(nproc)"
scripts/build.sh asan
ctest --preset asan -j "$(nproc)" --label-exclude slow
# Fuzz smoke: every libFuzzer target of fuzz/ on its committed corpus (past crashes included), then 10 s of
# fuzzing each. scripts/fuzz.sh without an argument is the longer run (600 s per target).
scripts/fuzz.sh 10
