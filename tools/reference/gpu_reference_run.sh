#!/usr/bin/env bash
# One GPU-host call that produces every reference the CPU tests compare with (no GPU needed for these, only
# the host's Python packages): tiktoken goldens and throughput, and the transformers 5.17 goldens.
# Inputs are prepared here and carried (see tools/reference/README.md):
#   .gpu/tok/{tekken.json,corpus.jsonl,english.txt}   scripts/make_tekken_json.py, scripts/make_tokenizer_corpus.py --english
#   .gpu/ckpt/*                                        tools/reference/make_checkpoints.sh .gpu/ckpt BUILD_DIR
#   .gpu/bin/bench_tokenizer + .gpu/bin/lib/           optional: quatre's tokenizer bench built here, with its shared libraries
# Usage there: bash tools/reference/gpu_reference_run.sh $OUT
set -uo pipefail
out=${1:?usage: gpu_reference_run.sh OUT_DIR}
mkdir -p "$out"
py=python3
python3 -c 'import transformers, tiktoken' 2>/dev/null || py=/opt/torch/.venv/bin/python3
status=0

echo "== tiktoken goldens"
$py tools/reference/tiktoken_goldens.py --tekken .gpu/tok/tekken.json --corpus .gpu/tok/corpus.jsonl \
  --out "$out/tiktoken_goldens.txt.gz" 2>&1 | tee "$out/tiktoken.log" || status=1

echo "== encode throughput, same machine: tiktoken, then quatre"
$py tools/reference/tiktoken_bench.py --tekken .gpu/tok/tekken.json --corpus .gpu/tok/corpus.jsonl \
  --english .gpu/tok/english.txt 2>&1 | tee "$out/bench_tokenizer.txt" || status=1
if [ -x .gpu/bin/bench_tokenizer ]; then
  LD_LIBRARY_PATH=.gpu/bin/lib .gpu/bin/bench_tokenizer --data-dir .gpu/tok 2>&1 | tee -a "$out/bench_tokenizer.txt" || status=1
fi
lscpu | grep -E 'Model name|^CPU\(s\)' >> "$out/bench_tokenizer.txt"

echo "== transformers goldens"
bash tools/reference/make_goldens.sh .gpu/ckpt "$out" || status=1
exit $status
