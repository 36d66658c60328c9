// The latent KV cache of MLA (MODEL.md §5.2): per layer a paged pool [n_blocks, block_size, R+Dr] of F32 rows,
// each c_kv after kv_a_layernorm then k_rope after RoPE; sequences address it through block tables.
// Depends on core, io/model_config.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/arena.h"
#include "core/backend.h"
#include "io/model_config.h"

namespace quatre::model {

class KvCache {
 public:
  struct Options {
    int64_t n_blocks = 0;
    int64_t block_size = 16;
    // Fill the pool with NaN at creation, so attention that reads an entry nobody wrote poisons its output.
    bool poison = true;
  };
  KvCache(const io::TextConfig& text, Backend& backend, Options options);

  Tensor layer(int64_t layer_idx) const;  // [n_blocks, block_size, R+Dr]
  int64_t n_layers() const { return n_layers_; }
  int64_t n_blocks() const { return options_.n_blocks; }
  int64_t block_size() const { return options_.block_size; }
  int64_t row_width() const { return row_width_; }  // R + Dr

  // A minimal block allocator for tests and tools (the engine's BlockPool replaces it). Throws InvalidRequest
  // when fewer than n blocks are free.
  std::vector<int32_t> allocate(int64_t n);
  void release(std::span<const int32_t> blocks);
  int64_t n_free() const { return static_cast<int64_t>(free_.size()); }

 private:
  Options options_;
  int64_t n_layers_ = 0;
  int64_t row_width_ = 0;
  Buffer pool_;                  // [n_layers, n_blocks, block_size, R+Dr] F32
  std::vector<int32_t> free_;    // free block ids, popped from the back
};

}  // namespace quatre::model
