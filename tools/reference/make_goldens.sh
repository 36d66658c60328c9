#!/usr/bin/env bash
# On the reference host (transformers 5.17, torch 2.11, safetensors): golden logits for every checkpoint directory
# under CKPT_ROOT (a directory with a config.json), both softmax-scale modes (hf, release), three prompts each.
#   bash tools/reference/make_goldens.sh CKPT_ROOT OUT_DIR
# OUT_DIR receives goldens.tar (tests/data/golden/*.safetensors + MANIFEST.tsv; extract it at the repository root),
# summary.txt and make_goldens.log; and, when CKPT_ROOT has tiny-hf-bf16-s1, vision_goldens.tar
# (tests/data/golden/vision/*.safetensors, from goldens_vision.py; extract it the same way) and goldens_vision.log. The individual files are written to a scratch directory.
# Set PYTHON to choose the interpreter (default: python3, or /opt/torch/.venv/bin/python3 if python3 lacks
# transformers). Exit status is non-zero if any checkpoint failed (the tar then holds the ones that worked).
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 CKPT_ROOT OUT_DIR" >&2
  exit 2
fi
root=$1
out=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  if ! python3 -c 'import torch, transformers, safetensors' 2>/dev/null && [ -x /opt/torch/.venv/bin/python3 ]; then
    PYTHON=/opt/torch/.venv/bin/python3
  fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRANSFORMERS_VERBOSITY=error HF_HUB_DISABLE_PROGRESS_BARS=1
export TOKENIZERS_PARALLELISM=false PYTHONDONTWRITEBYTECODE=1

ckpts=()
for d in "$root"/*/; do
  if [ -f "$d/config.json" ]; then ckpts+=("${d%/}"); fi
done
if [ ${#ckpts[@]} -eq 0 ]; then
  echo "no checkpoint directories (with a config.json) under $root" >&2
  exit 2
fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

status=0
"$PYTHON" "$here/make_goldens.py" --out "$work" --tar "$out/goldens.tar" --summary "$out/summary.txt" \
  "${ckpts[@]}" 2>&1 | tee "$out/make_goldens.log" || status=$?

# vision goldens (issue #5) from the checkpoint with a vision tower they were made for
if [ -f "$root/tiny-hf-bf16-s1/config.json" ]; then
  "$PYTHON" "$here/goldens_vision.py" --ckpt "$root/tiny-hf-bf16-s1" --out "$work/vision" 2>&1 | tee "$out/goldens_vision.log" \
    || status=1
  cp "$work/vision/vision_goldens.tar" "$out/" 2>/dev/null || status=1
fi

echo
ls -l "$out"
if [ -f "$out/summary.txt" ]; then
  echo
  cat "$out/summary.txt"
fi
exit "$status"
