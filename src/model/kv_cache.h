// The latent KV cache of MLA (MODEL.md §5.2): per layer a paged pool [n_blocks, block_size, R+Dr] of rows in
// F32, BF16 or FP8 E4M3 (scale 1, values beyond +-448 saturated), each c_kv after kv_a_layernorm then k_rope
// after RoPE; sequences address it through block tables. Backends convert to and from F32 on the fly.
// Depends on core, io/model_config.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "core/arena.h"
#include "core/backend.h"
#include "io/model_config.h"

namespace quatre::model {

// "f32", "bf16", "fp8" (F8_E4M3) -> the dtype; throws InvalidRequest naming kv-dtype otherwise.
DType parse_kv_dtype(std::string_view name);
std::string_view kv_dtype_name(DType dtype);  // "f32", "bf16", "fp8"
// Bytes of one block of the whole cache: n_layers * block_size * (R+Dr) elements of `dtype`.
int64_t kv_block_bytes(const io::TextConfig& text, int64_t block_size, DType dtype);

class KvCache {
 public:
  struct Options {
    int64_t n_blocks = 0;
    int64_t block_size = 16;
    // Fill the pool with NaN at creation, so attention that reads an entry nobody wrote poisons its output.
    bool poison = true;
    DType dtype = DType::F32;  // F32, BF16 or F8_E4M3
  };
  KvCache(const io::TextConfig& text, Backend& backend, Options options);

  Tensor layer(int64_t layer_idx) const;  // [n_blocks, block_size, R+Dr]
  int64_t n_layers() const { return n_layers_; }
  int64_t n_blocks() const { return options_.n_blocks; }
  int64_t block_size() const { return options_.block_size; }
  int64_t row_width() const { return row_width_; }  // R + Dr
  DType dtype() const { return options_.dtype; }
  int64_t bytes() const { return static_cast<int64_t>(pool_.bytes()); }

  // A minimal block allocator for tests and tools (the engine's BlockPool replaces it). Throws InvalidRequest
  // when fewer than n blocks are free.
  std::vector<int32_t> allocate(int64_t n);
  void release(std::span<const int32_t> blocks);
  int64_t n_free() const { return static_cast<int64_t>(free_.size()); }

 private:
  Options options_;
  int64_t n_layers_ = 0;
  int64_t row_width_ = 0;
  Buffer pool_;                  // [n_layers, n_blocks, block_size, R+Dr] of dtype
  std::vector<int32_t> free_;    // free block ids, popped from the back
};

}  // namespace quatre::model
