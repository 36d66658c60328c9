// quantize_checkpoint: a Mistral Small 4 checkpoint (either format, BF16 or FP8) -> the same format with quatre's
// 4-bit weights (core/int4.h) for the chosen modules, the other linears of an FP8 input FP8 as stored (with their
// scales; BF16 with keep_fp8 off), the rest in BF16, and "quantization_config" marked. Streamed: one output tensor
// in memory at a time, the input read through its mmap; no GPU. Depends on io.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "io/model_config.h"

namespace quatre::quant {

struct QuantizeOptions {
  io::Int4Config int4;                               // group size, symmetric or not, which modules
  std::optional<io::CheckpointFormat> input_format;  // when the input directory holds both
  bool keep_fp8 = true;                              // FP8 input: linears not in 4 bits stay FP8 (else BF16)
  uint64_t max_shard_bytes = 5ull << 30;
  // One line per tensor written ("[12/345] name [shape] U8 (4-bit)"); optional.
  std::function<void(const std::string&)> progress;
};

struct QuantizeSummary {
  int64_t n_tensors = 0;
  int64_t n_int4_weights = 0;  // logical weights stored in 4 bits
  uint64_t bytes_in = 0, bytes_out = 0;
};

// Writes the quantised checkpoint into `out_dir` (created; must be absent or empty), with the input's
// tekken.json and generation_config.json. Throws InvalidRequest for bad options (a group size that does not divide
// a width, an input that is already 4-bit, a non-empty output) and LoadError for unreadable input or I/O failures.
QuantizeSummary quantize_checkpoint(const std::filesystem::path& in_dir, const std::filesystem::path& out_dir,
                                    const QuantizeOptions& options);

}  // namespace quatre::quant
