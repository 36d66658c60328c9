#!/usr/bin/env bash
# On a GPU host, from the repo root: issue #6's side-by-side with llama.cpp on one full-width 2-layer checkpoint
# (quatre's FP8 copy against llama.cpp's GGUF Q8_0 of the BF16 copy, the same seed), in the last of three device
# calls on a warm machine, because the llama.cpp pack (.gpu/llama, tools/peer/build_llamacpp.sh: two ~20 MB parts)
# and the tree pass one call's 64 MiB together:
#   1. carry [".gpu/llama/p0"], command "true"       2. carry [".gpu/llama/p1"], command "true"
#   3. carry [".gpu/pack", ".gpu/tekken"], command "bash tools/gpu/peer_llamacpp.sh $OUT"
# (.gpu/pack: tools/gpu/pack.sh build-cudah quatre quatre-bench; .gpu/tekken/tekken.json: scripts/make_tekken_json.py,
# the real base vocabulary, so that llama.cpp's converter finds its "tekken" pre-tokenizer.) Steps: quatre gen-model
# in both dtypes (HF format, with a 1-layer vision tower: the converter knows Mistral3ForConditionalGeneration),
# tokenizer.json beside the BF16 copy (scripts/make_hf_tokenizer_json.py), the converter to Q8_0, then llama-bench
# -ngl 99 and quatre-bench --model on the FP8 copy: decode at batch 1 (128 tokens) and prefill of 1024 tokens.
# Logs under OUT_DIR; the two tables last. First run 2026-12-06 (bench/RESULTS.md): llama.cpp's decode at its
# defaults looked host-bound, so it now also runs with flash attention forced off and on (-fa 0,1).
set -uo pipefail
out=${1:?usage: peer_llamacpp.sh OUT_DIR}
mkdir -p "$out"
source tools/gpu/packed_env.sh
work=/tmp/peer
mkdir -p "$work"
if [ ! -x "$work/llama/bin/llama-bench" ]; then
  cat .gpu/llama/p0/llama.tar.xz.part* .gpu/llama/p1/llama.tar.xz.part* > "$work/llama.tar.xz" &&
    tar -C "$work" -xJf "$work/llama.tar.xz" || { echo "the llama.cpp parts are missing: calls 1 and 2 first"; exit 2; }
fi
cat "$work/llama/VERSION"
tekken=.gpu/tekken/tekken.json
[ -f "$tekken" ] || { echo "no $tekken (scripts/make_tekken_json.py)"; exit 2; }
for dtype in bf16 fp8; do
  if [ ! -f "$work/$dtype/config.json" ]; then
    rm -rf "$work/$dtype"
    timeout 240 "$bin/quatre" gen-model "$work/$dtype" --preset mistral-small-4 --layers 2 --vision-layers 1 \
      --dtype "$dtype" --seed 6 --tokenizer "$tekken" > "$out/gen_$dtype.txt" 2>&1
    echo "== gen-model $dtype rc=$? $(du -sh "$work/$dtype" | cut -f1)"
  fi
done
python3 scripts/make_hf_tokenizer_json.py "$tekken" "$work/bf16" || exit 2
gguf="$work/q8_0.gguf"
if [ ! -f "$gguf" ]; then
  timeout 400 python3 "$work/llama/convert_hf_to_gguf.py" "$work/bf16" --outtype q8_0 --outfile "$gguf" \
    > "$out/convert.txt" 2>&1
  echo "== convert to Q8_0 rc=$? $(du -sh "$gguf" 2>/dev/null | cut -f1)"
  grep -E "tokenizer.ggml.pre|chkhsh|Error|error" "$out/convert.txt" | head -5
fi
timeout 120 "$work/llama/bin/llama-bench" -m "$gguf" -ngl 99 -p 1024 -n 128 -r 3 -o md > "$out/llama_bench.txt" 2>&1
echo "== llama-bench rc=$?"
timeout 150 "$work/llama/bin/llama-bench" -m "$gguf" -ngl 99 -fa 0,1 -p 1024 -n 128 -r 2 -o md > "$out/llama_bench_fa.txt" 2>&1
echo "== llama-bench -fa 0,1 rc=$?"
timeout 120 "$bin/quatre-bench" --model "$work/fp8" --batch 1 --context 1024 --prefill 1024 --steps 8 \
  > "$out/quatre_bench.txt" 2>&1
echo "== quatre-bench rc=$?"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
grep -E "^\|" "$out/llama_bench.txt" "$out/llama_bench_fa.txt"
grep -vE "^  (op|[a-z])" "$out/quatre_bench.txt" | tail -8
