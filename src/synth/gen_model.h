// gen-model: writes a synthetic checkpoint of the exact Mistral Small 4 architecture, deterministic per
// seed, in either format, BF16 or FP8 (per-tensor scales like the release, MODEL.md §6), with the real
// file layout: config/params JSON, sharded safetensors with an index, generation_config, tekken.json.
// Depends on io.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "io/model_config.h"
#include "io/weight_map.h"

namespace quatre::synth {

struct GenModelOptions {
  io::ModelConfig config;                       // architecture; config.quantization is set from `fp8`
  io::CheckpointFormat format = io::CheckpointFormat::kHuggingFace;
  bool fp8 = false;
  std::optional<io::HfNaming> hf_naming;        // default: legacy VLM prefixes, or model.* for text-only
  uint64_t seed = 0;
  uint64_t max_shard_bytes = 5ull << 30;
  std::optional<std::filesystem::path> tokenizer;  // copy this tekken.json instead of a synthetic one
  std::function<void(const std::string&)> progress;  // optional: one line per file written
};

// Writes the checkpoint into `out_dir` (created; must be empty or absent). Throws InvalidRequest for bad
// options and LoadError for I/O failures.
void generate_checkpoint(const GenModelOptions& options, const std::filesystem::path& out_dir);

}  // namespace quatre::synth
