#!/usr/bin/env bash
# The README's first command: installs what is needed, builds, and starts quatre.
#   scripts/start.sh                 serves the built-in default model on http://127.0.0.1:8000 (chat page at /)
#   scripts/start.sh ARGS...         quatre ARGS... (e.g. chat, or inspect /path/to/Mistral-Small-4-119B-2603)
# The default model (models/default, laid out on first use by scripts/make_default_model.sh) is a small demo
# model of the exact Mistral Small 4 architecture trained for 85 seconds (assets/demo-model/README.md): it
# answers in English-like text, nothing more. QUATRE_HOST / QUATRE_PORT change where the server listens.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh default >/dev/null
scripts/make_default_model.sh
if (($#)); then
  exec build/quatre "$@"
fi
build/quatre run --prompt "Hello! Who are you?" --max-tokens 64 --seed 0
exec build/quatre serve --host "${QUATRE_HOST:-127.0.0.1}" --port "${QUATRE_PORT:-8000}"
