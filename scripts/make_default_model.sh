#!/usr/bin/env bash
# Lays out the built-in default model: the small trained demo model of assets/demo-model (issue #12) plus the
# tekken.json that scripts/make_tekken_json.py assembles from node_modules (never committed).
#   scripts/make_default_model.sh [DIR]     (default: models/default, where quatre looks without --model)
# Idempotent: a DIR that already holds these weights and a tekken.json is left as it is; anything else there
# (e.g. the random-weight checkpoint earlier versions generated) is replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
src=assets/demo-model
dir=${1:-models/default}
files=(config.json generation_config.json model.safetensors)
up_to_date=1
for f in "${files[@]}"; do
  cmp -s "$src/$f" "$dir/$f" || up_to_date=0
done
[ -s "$dir/tekken.json" ] || up_to_date=0
((up_to_date)) && exit 0
rm -rf "$dir.tmp"
mkdir -p "$dir.tmp"
cp "${files[@]/#/$src/}" "$dir.tmp/"
python3 scripts/make_tekken_json.py "$dir.tmp/tekken.json"
rm -rf "$dir"
mv "$dir.tmp" "$dir"
echo "make_default_model: $dir holds the demo model (assets/demo-model/README.md)"
