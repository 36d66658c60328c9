// The checks of the Backend interface's step metadata that every backend (and a replayed step's caller) makes, and
// the interface's composed default ops. Depends on core only.
#include "core/backend.h"

#include <utility>

#include <fmt/format.h>

#include "core/error.h"

namespace quatre {

void check_attn_meta(const AttnMeta& m, int64_t T, int64_t n_blocks, int64_t block_size) {
  if (static_cast<int64_t>(m.seq_index.size()) != T || static_cast<int64_t>(m.context_lens.size()) != T ||
      m.max_blocks_per_seq < 1) {
    throw InvalidRequest(fmt::format("attention metadata: {} sequence indices and {} context lengths for {} tokens; {} "
                                     "block-table entries of width {}",
                                     m.seq_index.size(), m.context_lens.size(), T, m.block_tables.size(),
                                     m.max_blocks_per_seq));
  }
  const int64_t width = m.max_blocks_per_seq;
  const auto n_seqs = static_cast<int64_t>(m.block_tables.size()) / width;
  for (int64_t t = 0; t < T; ++t) {
    const auto i = static_cast<size_t>(t);
    const int64_t seq = m.seq_index[i], n = m.context_lens[i];
    if (seq < 0 || seq >= n_seqs || n < 1 || n > width * block_size) {
      throw InvalidRequest(fmt::format("attention metadata: token {}: sequence {} of {}, context {} (at most {})", t,
                                       seq, n_seqs, n, width * block_size));
    }
    for (int64_t b = 0; b < (n + block_size - 1) / block_size; ++b) {
      const int32_t block = m.block_tables[static_cast<size_t>(seq * width + b)];
      if (block < 0 || block >= n_blocks) {
        throw InvalidRequest(fmt::format("attention metadata: token {}: block {} of {}", t, block, n_blocks));
      }
    }
  }
}

void Backend::rope_kv_write(Tensor q, Tensor kv_cache, const Tensor& kv_a, const Weight& kv_norm, float eps,
                            const RopeArgs& rope_args, std::span<const int64_t> slots, Arena& a) {
  auto [c_raw, k_rope] = split_cols(kv_a, rope_args.dims.kv_lora_rank, a);  // [T,R], [T,Dr]
  rope(std::move(q), k_rope, rope_args);
  kv_write(std::move(kv_cache), rms_norm(c_raw, kv_norm, eps, a), k_rope, slots);
}

}  // namespace quatre
