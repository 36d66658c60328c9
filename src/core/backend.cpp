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

namespace {

void check_heads(const Tensor& t, const char* what, int64_t N, int64_t H, int64_t width) {
  if (t.dtype() != DType::F32 || t.rank() != 2 || t.dim(0) != N || t.dim(1) != width || H < 1 || width % H != 0) {
    throw InvalidRequest(fmt::format("{}: expected F32 [{}, {}] ({} heads), got {} {}", what, N, width, H,
                                     dtype_name(t.dtype()), t.shape_string()));
  }
}

}  // namespace

void check_rope_2d_args(const Tensor& q, const Tensor& k, const Rope2dArgs& args) {
  const auto N = static_cast<int64_t>(args.rows.size());
  const int64_t dh = args.head_dim;
  if (dh < 4 || dh % 4 != 0 || static_cast<int64_t>(args.cols.size()) != N ||
      static_cast<int64_t>(args.freq.size()) != dh / 2) {
    throw InvalidRequest(fmt::format("rope_2d: head_dim {} (a multiple of 4), {} rows, {} columns, {} frequencies "
                                     "(expected head_dim/2)", dh, N, args.cols.size(), args.freq.size()));
  }
  check_heads(q, "rope_2d q", N, args.n_heads, args.n_heads * dh);
  check_heads(k, "rope_2d k", N, args.n_heads, args.n_heads * dh);
}

void check_segment_attention_args(const SegmentAttentionArgs& args) {
  if (!args.q.is_defined() || args.q.rank() != 2) throw InvalidRequest("segment_attention: q must be [N, H*dh]");
  const int64_t N = args.q.dim(0), width = args.q.dim(1);
  check_heads(args.q, "segment_attention q", N, args.n_heads, width);
  check_heads(args.k, "segment_attention k", N, args.n_heads, width);
  check_heads(args.v, "segment_attention v", N, args.n_heads, width);
  const std::span<const int32_t> b = args.segment_begin;
  bool ok = b.size() >= 2 && b.front() == 0 && b.back() == N && args.scale > 0.0f;
  for (size_t i = 1; ok && i < b.size(); ++i) ok = b[i] > b[i - 1];
  if (!ok) {
    throw InvalidRequest(fmt::format("segment_attention: segment bounds must rise from 0 to N={} (got {} bounds, "
                                     "first {}, last {}) with a positive scale ({})",
                                     N, b.size(), b.empty() ? -1 : b.front(), b.empty() ? -1 : b.back(), args.scale));
  }
}

void Backend::rope_kv_write(Tensor q, Tensor kv_cache, const Tensor& kv_a, const Weight& kv_norm, float eps,
                            const RopeArgs& rope_args, std::span<const int64_t> slots, Arena& a) {
  auto [c_raw, k_rope] = split_cols(kv_a, rope_args.dims.kv_lora_rank, a);  // [T,R], [T,Dr]
  rope(std::move(q), k_rope, rope_args);
  kv_write(std::move(kv_cache), rms_norm(c_raw, kv_norm, eps, a), k_rope, slots);
}

}  // namespace quatre
