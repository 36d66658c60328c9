#!/usr/bin/env bash
# The README's test command: installs what is needed, builds, and runs every test
# (the default build, then the CPU tests again under ASan+UBSan).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh default
ctest --preset default -j "$(nproc)"
scripts/build.sh asan
ctest --preset asan -j "$(nproc)" --label-exclude slow
