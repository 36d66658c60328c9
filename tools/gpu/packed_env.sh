# Sourced by the tools/gpu scripts on a GPU host, from the repo root: the packed binaries' directory ($bin, with
# their shared libraries on LD_LIBRARY_PATH), the layers of the random-weight model that fit this card
# (${layers[@]}: all 36 where ~113 GiB fit, else --layers 16; GPU_LAYERS=N forces N), a line naming the device, and
# the source dir the test binaries were built in (they read tests/data through it) linked to this tree.
# tools/gpu/pack.sh's archive, when carried, replaces .gpu/cuda/{bin,base} (a warm host keeps an older unpacking).
if [ -f .gpu/pack/cuda.tar.xz ]; then
  sum=$(md5sum < .gpu/pack/cuda.tar.xz)
  if [ "$(cat .gpu/cuda/.unpacked 2>/dev/null)" != "$sum" ]; then
    rm -rf .gpu/cuda/bin .gpu/cuda/base && mkdir -p .gpu/cuda && tar -C .gpu/cuda -xJf .gpu/pack/cuda.tar.xz &&
      echo "$sum" > .gpu/cuda/.unpacked
  fi
fi
bin=.gpu/cuda/bin
export LD_LIBRARY_PATH=$PWD/$bin/lib:${LD_LIBRARY_PATH:-}
# cuBLASLt is not packed (~540 MB): the host's CUDA toolkit's, else the one PyTorch's wheels bring.
if ! ldconfig -p 2>/dev/null | grep -q 'libcublasLt.so.13 '; then
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
    $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, s) for p in nvidia.__path__ for s in ("cublas/lib", "cu13/lib")))' 2>/dev/null); do
    if [ -e "$d/libcublasLt.so.13" ]; then export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$d; break; fi
  done
  case ":$LD_LIBRARY_PATH:" in
    *cuda/lib64:*|*cuda/targets*|*cublas/lib:*|*cu13/lib:*) ;;
    *) f=$(find / -xdev -name 'libcublasLt.so.13' 2>/dev/null | head -1)
       if [ -n "$f" ]; then export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$(dirname "$f"); else echo "== no libcublasLt.so.13 on this host"; fi ;;
  esac
fi
# Test binaries read tests/data and write checkpoints through the source dir compiled in (pack.sh records it).
src_dir=$(cat "$bin/source_dir" 2>/dev/null || echo /work/main)
if [ ! -e "$src_dir/tests/data" ]; then mkdir -p "$(dirname "$src_dir")" && ln -sfn "$PWD" "$src_dir"; fi
mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
layers=()
[ "${mib:-0}" -lt 120000 ] && layers=(--layers 16)  # the full FP8 model needs ~113 GiB
[ -n "${GPU_LAYERS:-}" ] && layers=(--layers "$GPU_LAYERS")  # e.g. 16 on an H200, to compare with an H100
echo "== device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader) ${layers[*]}"
