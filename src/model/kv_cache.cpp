// Paged latent KV cache: one allocation for every layer, plus a free list for tests and tools.
// Depends on core, io/model_config.
#include "model/kv_cache.h"

#include <cstddef>
#include <limits>

#include <fmt/format.h>

#include "core/error.h"

namespace quatre::model {

DType parse_kv_dtype(std::string_view name) {
  if (name == "f32") return DType::F32;
  if (name == "bf16") return DType::BF16;
  if (name == "fp8") return DType::F8_E4M3;
  throw InvalidRequest(fmt::format("kv-dtype: expected f32, bf16 or fp8, got '{}'", name));
}

std::string_view kv_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::F8_E4M3: return "fp8";
    default: return dtype_name(dtype);
  }
}

int64_t kv_block_bytes(const io::TextConfig& text, int64_t block_size, DType dtype) {
  return text.n_layers * block_size * (text.kv_lora_rank + text.qk_rope_head_dim) * static_cast<int64_t>(dtype_size(dtype));
}

KvCache::KvCache(const io::TextConfig& text, Backend& backend, Options options)
    : options_(options), n_layers_(text.n_layers), row_width_(text.kv_lora_rank + text.qk_rope_head_dim) {
  if (options.n_blocks <= 0 || options.block_size <= 0 || options.n_blocks > std::numeric_limits<int32_t>::max()) {
    throw InvalidRequest(fmt::format("KV cache needs n_blocks > 0 and block_size > 0, got {} and {}", options.n_blocks,
                                     options.block_size));
  }
  if (options.dtype != DType::F32 && options.dtype != DType::BF16 && options.dtype != DType::F8_E4M3) {
    throw InvalidRequest(fmt::format("kv-dtype: the KV cache holds F32, BF16 or F8_E4M3, not {}", dtype_name(options.dtype)));
  }
  const auto elements = static_cast<size_t>(n_layers_ * options.n_blocks * options.block_size * row_width_);
  // Rounded up to whole floats, so the poison fill below covers the pool as F32 words.
  const size_t bytes = (elements * dtype_size(options.dtype) + 3) / 4 * 4;
  pool_ = Buffer(backend.memory(), bytes);
  if (options.poison) {
    // F32 NaN words: a NaN in F32; in BF16 the pairs (0, NaN); in FP8 E4M3 the bytes (0, 0, 0xC0, NaN 0x7F).
    // Either way every row of a few elements holds a NaN, which poisons attention over it.
    backend.fill(Tensor(pool_.data(), DType::F32, {static_cast<int64_t>(bytes / 4)}, backend.device()),
                 std::numeric_limits<float>::quiet_NaN());
  }
  free_.reserve(static_cast<size_t>(options.n_blocks));
  for (int64_t b = options.n_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

Tensor KvCache::layer(int64_t layer_idx) const {
  CHECK(layer_idx >= 0 && layer_idx < n_layers_) << "layer " << layer_idx << " of " << n_layers_;
  const auto layer_bytes = static_cast<size_t>(options_.n_blocks * options_.block_size * row_width_) * dtype_size(options_.dtype);
  return Tensor(static_cast<std::byte*>(pool_.data()) + static_cast<size_t>(layer_idx) * layer_bytes, options_.dtype,
                {options_.n_blocks, options_.block_size, row_width_}, pool_.device());
}

std::vector<int32_t> KvCache::allocate(int64_t n) {
  if (n < 0 || n > n_free()) {
    throw InvalidRequest(fmt::format("KV cache: {} blocks requested, {} free of {}", n, n_free(), options_.n_blocks));
  }
  std::vector<int32_t> blocks(free_.end() - n, free_.end());
  free_.resize(free_.size() - static_cast<size_t>(n));
  return blocks;
}

void KvCache::release(std::span<const int32_t> blocks) {
  for (int32_t b : blocks) {
    CHECK(b >= 0 && b < options_.n_blocks) << "block " << b << " of " << options_.n_blocks;
    free_.push_back(b);
  }
}

}  // namespace quatre::model
