// libFuzzer target: the safetensors validation (io::parse_safetensors) over arbitrary file bytes.
// LoadError is the expected refusal; a crash, a sanitizer report, another exception or a failed CHECK is a finding.
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/check.h"
#include "core/dtype.h"
#include "core/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace quatre;
  try {
    const io::SafetensorsHeader h = io::parse_safetensors({reinterpret_cast<const std::byte*>(data), size}, "fuzz.safetensors");
    // What the reader promises: every tensor's bytes lie in the data section, sized numel * dtype size,
    // and together they cover it exactly.
    CHECK(h.data_start >= 8 && h.data_start <= size) << h.data_start << " " << size;
    size_t covered_bytes = 0;
    for (const io::TensorInfo& t : h.tensors) {
      CHECK(t.offset_bytes + t.size_bytes <= size - h.data_start) << t.name;
      CHECK(static_cast<uint64_t>(t.numel()) * dtype_size(t.dtype) == t.size_bytes) << t.name;
      covered_bytes += t.size_bytes;
    }
    CHECK(h.data_start + covered_bytes == size) << covered_bytes;
  } catch (const LoadError&) {
  }
  return 0;
}
