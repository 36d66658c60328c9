#!/usr/bin/env bash
# `quatre run --tensor-parallel-size N` end to end on the CPU: the same reply as one rank, greedy and sampled (seeded),
# for N = 2 and 4 on the tiny preset (4 heads, 8 experts); N = 3 is refused naming num_attention_heads, exit code 1.
# Usage: test_run_tp.sh QUATRE
set -euo pipefail
quatre=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$quatre" gen-model "$dir/m" --preset tiny --seed 4 > /dev/null
for mode in "--temperature 0" "--temperature 0.9 --seed 17"; do
  # shellcheck disable=SC2086
  "$quatre" run --model "$dir/m" --raw --prompt "Once upon a time" --max-tokens 40 $mode > "$dir/tp1.txt" 2> /dev/null
  [ -s "$dir/tp1.txt" ] || { echo "FAIL: empty reply with one rank ($mode)"; exit 1; }
  for n in 2 4; do
    # shellcheck disable=SC2086
    "$quatre" run --model "$dir/m" --raw --prompt "Once upon a time" --max-tokens 40 $mode --tensor-parallel-size $n \
      > "$dir/tp$n.txt" 2> "$dir/tp$n.err"
    grep -q "40 generated" "$dir/tp$n.err" || { echo "FAIL: N=$n did not generate 40 tokens"; cat "$dir/tp$n.err"; exit 1; }
    cmp -s "$dir/tp1.txt" "$dir/tp$n.txt" || { echo "FAIL: N=$n ($mode) differs from one rank"; exit 1; }
    echo "ok: N=$n ($mode) == one rank"
  done
done
if "$quatre" run --model "$dir/m" --raw --prompt hi --tensor-parallel-size 3 > /dev/null 2> "$dir/tp3.err"; then
  echo "FAIL: N=3 over 4 heads ran"; exit 1
fi
grep -q "does not divide num_attention_heads=4" "$dir/tp3.err" || { echo "FAIL: N=3 error:"; cat "$dir/tp3.err"; exit 1; }
echo "ok: N=3 refused: $(cat "$dir/tp3.err")"
