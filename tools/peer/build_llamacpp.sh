#!/usr/bin/env bash
# Builds the peer for issue #6's side-by-side, llama.cpp, on this machine (no GPU needed: CUDA compiles here) from
# the npm package node-llama-cpp@3.22.1, whose llama/gitRelease.bundle is a git bundle of llama.cpp (2026-09, with
# Mistral Small 4 support: LLM_ARCH_MISTRAL4, converter class Mistral3Model.Mistral4Model). Nothing of it enters the
# repo: sources and build live in WORK_DIR (default /tmp/llama); what the GPU host needs (llama-bench, and the
# converter, convert_hf_to_gguf.py with conversion/ and gguf-py/, which writes Q8_0 itself) is packed into
# .gpu/llama/llama.tar.xz (git-ignored): 40 MB (llama-bench is 77 MB, most of it CUDA code for sm_90a), also split
# in two parts (.gpu/llama/p0, p1) that two device calls carry one at a time (tools/gpu/peer_llamacpp.sh).
# Usage: tools/peer/build_llamacpp.sh [WORK_DIR]   (2 cores: about 75 minutes cold; ccache makes reruns quick)
set -euo pipefail
work=${1:-/tmp/llama}
repo=$PWD
mkdir -p "$work" && cd "$work"
[ -f node-llama-cpp-3.22.1.tgz ] || npm pack node-llama-cpp@3.22.1
[ -d package ] || tar xzf node-llama-cpp-3.22.1.tgz
[ -d src ] || git clone -q package/llama/gitRelease.bundle src
cd src
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
  -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON -DCMAKE_C_COMPILER_LAUNCHER=ccache \
  -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache > /dev/null
cmake --build build -j2 --target llama-bench
stage=$(mktemp -d)
mkdir -p "$stage/llama/bin"
cp build/bin/llama-bench "$stage/llama/bin/"
strip "$stage/llama/bin/"*
cp -r convert_hf_to_gguf.py conversion gguf-py "$stage/llama/"
git log -1 --format='llama.cpp %H %cd' > "$stage/llama/VERSION"
mkdir -p "$repo/.gpu/llama"
tar -C "$stage" -cJf "$repo/.gpu/llama/llama.tar.xz" llama
# Two parts, p0/ and p1/, each carried by a call of its own (tools/gpu/peer_llamacpp.sh): one call carries 64 MiB
# with the tree.
cd "$repo/.gpu/llama"
rm -rf p0 p1 && mkdir p0 p1
split -n 2 -d llama.tar.xz llama.tar.xz.part
mv llama.tar.xz.part00 p0/ && mv llama.tar.xz.part01 p1/
rm -rf "$stage"
du -h "$repo/.gpu/llama/llama.tar.xz"
