#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ (build-fuzz: clang, ASan+UBSan) and fuzzes each one, in turn, on a scratch
# copy of its committed corpus (fuzz/corpus/<target>/ stays clean). Crashes and failed properties are saved
# under build-fuzz/crashes/<target>/; the script exits non-zero when any target found one.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET (default 600)] [TARGET...]   e.g. scripts/fuzz.sh 60 fuzz_json
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift $(($# > 0 ? 1 : 0))

launcher=()
# ccache keyed on paths relative to the checkout, so a fresh clone elsewhere reuses the cache.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DQUATRE_FUZZ=ON -DQUATRE_CUDA=OFF \
  -DBUILD_TESTING=OFF "${launcher[@]}" >/dev/null
cmake --build build-fuzz --target fuzz_all -j "$(nproc)"

targets=("$@")
if ((${#targets[@]} == 0)); then
  for dir in fuzz/corpus/*/; do targets+=("$(basename "$dir")"); done
fi

failed=()
for target in "${targets[@]}"; do
  scratch=build-fuzz/corpus/$target
  crashes=build-fuzz/crashes/$target
  log=build-fuzz/logs/$target.log
  rm -rf "$scratch" && mkdir -p "$scratch" "$crashes" "$(dirname "$log")"
  cp fuzz/corpus/"$target"/* "$scratch"/
  echo "fuzz: $target for ${seconds}s (log: $log)"
  # -timeout: an input that takes 10 s is a finding too. The committed corpus (past crashes included) runs first.
  if ! build-fuzz/fuzz/"$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$crashes"/ "$scratch" >"$log" 2>&1; then
    failed+=("$target")
    tail -n 40 "$log"
  fi
  grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$log" | tail -n 2 || true
done

if ((${#failed[@]})); then
  echo "fuzz: findings in ${failed[*]}; inputs are under build-fuzz/crashes/" >&2
  exit 1
fi
echo "fuzz: no findings in ${#targets[@]} targets"
