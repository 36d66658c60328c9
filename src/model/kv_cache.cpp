// Paged latent KV cache: one allocation for every layer, plus a free list for tests and tools.
// Depends on core, io/model_config.
#include "model/kv_cache.h"

#include <limits>

#include <fmt/format.h>

#include "core/error.h"

namespace quatre::model {

KvCache::KvCache(const io::TextConfig& text, Backend& backend, Options options)
    : options_(options), n_layers_(text.n_layers), row_width_(text.kv_lora_rank + text.qk_rope_head_dim) {
  if (options.n_blocks <= 0 || options.block_size <= 0 || options.n_blocks > std::numeric_limits<int32_t>::max()) {
    throw InvalidRequest(fmt::format("KV cache needs n_blocks > 0 and block_size > 0, got {} and {}", options.n_blocks,
                                     options.block_size));
  }
  const auto floats = static_cast<size_t>(n_layers_ * options.n_blocks * options.block_size * row_width_);
  pool_ = Buffer(backend.memory(), floats * sizeof(float));
  if (options.poison) {
    backend.fill(Tensor(pool_.data(), DType::F32, {static_cast<int64_t>(floats)}, backend.device()),
                 std::numeric_limits<float>::quiet_NaN());
  }
  free_.reserve(static_cast<size_t>(options.n_blocks));
  for (int64_t b = options.n_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

Tensor KvCache::layer(int64_t layer_idx) const {
  CHECK(layer_idx >= 0 && layer_idx < n_layers_) << "layer " << layer_idx << " of " << n_layers_;
  const auto layer_floats = static_cast<size_t>(options_.n_blocks * options_.block_size * row_width_);
  return Tensor(static_cast<float*>(pool_.data()) + static_cast<size_t>(layer_idx) * layer_floats, DType::F32,
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
