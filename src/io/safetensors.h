// The safetensors format: a strict, validating reader over a memory map, and a streaming writer.
// Format: u64 little-endian header length N, N bytes of JSON header, then the data section.
// Depends on core.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "io/mapped_file.h"

namespace quatre::io {

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;  // outermost first; empty for a 0-d scalar
  size_t offset_bytes = 0;     // from the start of the data section
  size_t size_bytes = 0;
  int64_t numel() const;
};

// What a validated safetensors file holds, parsed from its bytes (the header and the tensors' byte ranges).
struct SafetensorsHeader {
  size_t data_start = 0;            // 8 + header length
  std::vector<TensorInfo> tensors;  // sorted by name
  std::map<std::string, std::string> metadata;
};

// The validation SafetensorsFile does, over bytes in memory (the whole file). Throws LoadError naming `origin`.
SafetensorsHeader parse_safetensors(std::span<const std::byte> file_bytes, const std::filesystem::path& origin);

class SafetensorsFile {
 public:
  static constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the reference implementation's limit
  static constexpr size_t kMaxRank = 8;

  // Maps and validates the whole file: header length and JSON, known dtypes, shapes, every byte range
  // inside the data section, byte size == numel * dtype size, no overlaps, no gaps, no duplicate names.
  // Throws LoadError naming the file and the tensor.
  explicit SafetensorsFile(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return file_.path(); }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // sorted by name
  const TensorInfo* find(std::string_view name) const;
  std::span<const std::byte> data(const TensorInfo& t) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  MappedFile file_;
  size_t data_start_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Streaming writer: tensors are declared first (so the header can be written), then produced one at a
// time, so a file larger than memory can be written. Writes to `path.tmp` and renames on success.
struct TensorSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
};
// fill(index, out): writes the bytes of tensors[index] into out (exactly numel * dtype size bytes).
using TensorFiller = std::function<void(size_t index, std::span<std::byte> out)>;
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorSpec>& tensors,
                       const TensorFiller& fill, const std::map<std::string, std::string>& metadata = {});

}  // namespace quatre::io
