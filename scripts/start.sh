#!/usr/bin/env bash
# The README's first command: installs what is needed, builds, and starts quatre.
#   scripts/start.sh                 the main job on the built-in default model
#   scripts/start.sh ARGS...         quatre ARGS... (e.g. inspect /path/to/Mistral-Small-4-119B-2603)
# The default model is a small synthetic checkpoint of the exact architecture, generated on first use into
# models/default. The main job is `quatre run` on a greeting until `quatre chat`/`serve` land (issues #8, #9).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh default >/dev/null
if (($#)); then
  exec build/quatre "$@"
fi
default_model=models/default
if [ ! -f "$default_model/params.json" ] && [ ! -f "$default_model/config.json" ]; then
  rm -rf "$default_model"
  build/quatre gen-model "$default_model" --preset tiny --format native --dtype fp8 --seed 0
fi
echo "quatre: the built-in default model is a small synthetic checkpoint of the Mistral Small 4 architecture"
echo "quatre: (random weights: it babbles; a trained demo model comes with issue #12)"
build/quatre inspect "$default_model"
exec build/quatre run --model "$default_model" --prompt "Hello! Who are you?" --max-tokens 48 --seed 0
