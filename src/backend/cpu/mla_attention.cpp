// CpuBackend::mla_attention in both forms (MODEL.md §3.5-3.8 naive, §5.3 absorbed), fp32, over the paged
// latent cache (F32, or BF16 / FP8 E4M3 converted to F32 per call). Work is split over (token, head) pairs. Depends on core only.
#include <algorithm>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/kernels.h"

namespace quatre::cpu {
namespace {

// Row of cache entry j of the sequence in block-table row `seq`.
const float* cache_row(const Tensor& kv_cache, const AttnMeta& m, int32_t seq, int64_t j) {
  const int64_t block_size = kv_cache.dim(1), width = kv_cache.dim(2);
  const int32_t block = m.block_tables[static_cast<size_t>(seq * m.max_blocks_per_seq + j / block_size)];
  DCHECK(block >= 0 && block < kv_cache.dim(0)) << "block " << block;
  return kv_cache.data_as<float>() + (block * block_size + j % block_size) * width;
}

void check_args(const MlaArgs& args) {
  const MlaDims& d = args.dims;
  const AttnMeta& m = *args.meta;
  const int64_t T = args.q.dim(0);
  CHECK_SHAPE(args.q, T, d.q_width());
  CHECK(args.kv_cache.rank() == 3 && args.kv_cache.dim(2) == d.cache_width()) << args.kv_cache.shape_string();
  CHECK(args.kv_b.w.dim(0) == d.n_heads * (d.qk_nope_head_dim + d.v_head_dim) && weight_cols(args.kv_b) == d.kv_lora_rank)
      << "kv_b " << args.kv_b.w.shape_string();
  CHECK(!args.kv_b.activation_scale) << "kv_b with an activation scale: the attention absorbs kv_b (W8A16 there)";
  CHECK(static_cast<int64_t>(m.seq_index.size()) == T && static_cast<int64_t>(m.context_lens.size()) == T)
      << "attention metadata for " << m.seq_index.size() << " tokens, q has " << T;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t seq = m.seq_index[static_cast<size_t>(t)], n = m.context_lens[static_cast<size_t>(t)];
    CHECK(n >= 1 && n <= m.max_blocks_per_seq * args.kv_cache.dim(1) &&
          (seq + 1) * m.max_blocks_per_seq <= static_cast<int64_t>(m.block_tables.size()))
        << "token " << t << ": sequence " << seq << ", context " << n;
  }
}

int64_t max_context(const AttnMeta& m) {
  int32_t s = 0;
  for (int32_t n : m.context_lens) s = std::max(s, n);
  return s;
}

// A BF16 or FP8 cache, read through an F32 copy of only the blocks this step attends to ([n_used, block_size,
// R+Dr], converted once per call rather than once per head), with block tables renumbered to index the copy.
struct F32Cache {
  Tensor cache;
  AttnMeta meta;
};
F32Cache to_f32_cache(const Tensor& kv_cache, const AttnMeta& m, Arena& a) {
  const int64_t block_size = kv_cache.dim(1), width = kv_cache.dim(2);
  int32_t* tables = a.array<int32_t>(m.block_tables.size());
  std::fill(tables, tables + m.block_tables.size(), 0);  // entries no token reads
  std::vector<int32_t> used;                              // old block ids, in order of first use
  std::vector<int32_t> renumbered(static_cast<size_t>(kv_cache.dim(0)), -1);
  for (size_t t = 0; t < m.seq_index.size(); ++t) {
    const int64_t row = m.seq_index[t] * static_cast<int64_t>(m.max_blocks_per_seq);
    for (int64_t k = 0; k * block_size < m.context_lens[t]; ++k) {
      const int32_t block = m.block_tables[static_cast<size_t>(row + k)];
      CHECK(block >= 0 && block < kv_cache.dim(0)) << "block " << block << " of " << kv_cache.dim(0);
      if (renumbered[static_cast<size_t>(block)] < 0) {
        renumbered[static_cast<size_t>(block)] = static_cast<int32_t>(used.size());
        used.push_back(block);
      }
      tables[row + k] = renumbered[static_cast<size_t>(block)];
    }
  }
  F32Cache f{.cache = a.tensor(DType::F32, {std::max<int64_t>(1, static_cast<int64_t>(used.size())), block_size, width}), .meta = m};
  const int64_t block_elems = block_size * width;
  for (size_t i = 0; i < used.size(); ++i) {
    const size_t from = static_cast<size_t>(used[i] * block_elems);
    float* dst = f.cache.data_as<float>() + static_cast<int64_t>(i) * block_elems;
    for (int64_t e = 0; e < block_elems; ++e) dst[e] = load_as_f32(kv_cache.data(), kv_cache.dtype(), from + static_cast<size_t>(e));
  }
  f.meta.block_tables = std::span<const int32_t>(tables, m.block_tables.size());
  return f;
}

}  // namespace

Tensor CpuBackend::mla_attention(const MlaArgs& args, Arena& a) {
  check_args(args);
  const DType dt = args.kv_cache.dtype();
  if (dt != DType::F32) {
    CHECK(dt == DType::BF16 || dt == DType::F8_E4M3) << "kv cache of " << dtype_name(dt);
    const F32Cache f = to_f32_cache(args.kv_cache, *args.meta, a);
    MlaArgs f32_args = args;
    f32_args.kv_cache = f.cache;
    f32_args.meta = &f.meta;
    return args.form == MlaForm::kNaive ? mla_naive(f32_args, a) : mla_absorbed(f32_args, a);
  }
  return args.form == MlaForm::kNaive ? mla_naive(args, a) : mla_absorbed(args, a);
}

// Per sequence: expand its cached latents [S,R] through kv_b into k_nope and v of every head
// ([S, H*(Dn+Dv)], head-major, k_nope then v), then per (token, head):
//   s_j = (q_nope·k_nope_j + q_rope·k_rope_j) · scale,  p = softmax(s),  o = Σ_j p_j v_j.
Tensor CpuBackend::mla_naive(const MlaArgs& args, Arena& a) {
  const MlaDims& d = args.dims;
  const AttnMeta& m = *args.meta;
  const int64_t T = args.q.dim(0), H = d.n_heads, Dn = d.qk_nope_head_dim, Dr = d.qk_rope_head_dim,
                Dv = d.v_head_dim, R = d.kv_lora_rank, Dh = Dn + Dr, kvb_width = H * (Dn + Dv);
  Tensor o = a.tensor(DType::F32, {T, H * Dv});  // [T, H*Dv]
  const int64_t S_max = max_context(m);
  float* scores_all = a.array<float>(static_cast<size_t>(pool_.n_threads() * S_max));
  int32_t* tokens = a.array<int32_t>(static_cast<size_t>(T));
  for (int64_t first = 0; first < T; ++first) {
    const int32_t seq = m.seq_index[static_cast<size_t>(first)];
    bool seen = false;  // sequences are handled at their first token
    for (int64_t t = 0; t < first && !seen; ++t) seen = m.seq_index[static_cast<size_t>(t)] == seq;
    if (seen) continue;
    int64_t n_tokens = 0, S = 0;
    for (int64_t t = first; t < T; ++t) {
      if (m.seq_index[static_cast<size_t>(t)] != seq) continue;
      tokens[n_tokens++] = static_cast<int32_t>(t);
      S = std::max<int64_t>(S, m.context_lens[static_cast<size_t>(t)]);
    }
    Tensor c = a.tensor(DType::F32, {S, R});  // [S,R]
    Tensor k_rope = a.tensor(DType::F32, {S, Dr});  // [S,Dr]
    for (int64_t j = 0; j < S; ++j) {
      const float* row = cache_row(args.kv_cache, m, seq, j);
      std::memcpy(c.data_as<float>() + j * R, row, static_cast<size_t>(R) * 4);
      std::memcpy(k_rope.data_as<float>() + j * Dr, row + R, static_cast<size_t>(Dr) * 4);
    }
    const Tensor kv = matmul(c, args.kv_b, a);  // [S, H*(Dn+Dv)]
    const float* kvp = kv.data_as<float>();
    pool_.parallel_for(n_tokens * H, 1, [&](int64_t begin, int64_t end, int worker) {
      float* scores = scores_all + static_cast<size_t>(worker) * static_cast<size_t>(S_max);
      for (int64_t i = begin; i < end; ++i) {
        const int64_t t = tokens[i / H], h = i % H, n = m.context_lens[static_cast<size_t>(t)];
        const float* q_nope = args.q.data_as<float>() + t * H * Dh + h * Dh;
        const float* q_rope = q_nope + Dn;
        for (int64_t j = 0; j < n; ++j) {
          const float* k_nope = kvp + j * kvb_width + h * (Dn + Dv);
          scores[j] = (dot(q_nope, k_nope, Dn) + dot(q_rope, k_rope.data_as<float>() + j * Dr, Dr)) * args.softmax_scale;
        }
        softmax_inplace(scores, n);
        float* out = o.data_as<float>() + t * H * Dv + h * Dv;
        std::fill(out, out + Dv, 0.0f);
        for (int64_t j = 0; j < n; ++j) {
          const float* v = kvp + j * kvb_width + h * (Dn + Dv) + Dn;
          for (int64_t e = 0; e < Dv; ++e) out[e] += scores[j] * v[e];
        }
      }
    });
  }
  return o;
}

// kv_b dequantised once per call; then per (token, head), against the latent rows of the cache:
//   q_abs = W_UKᵀ q_nope [R],  s_j = (q_abs·c_j + q_rope·k_rope_j) · scale,  ctx = Σ_j p_j c_j [R],  o = W_UV ctx.
Tensor CpuBackend::mla_absorbed(const MlaArgs& args, Arena& a) {
  const MlaDims& d = args.dims;
  const AttnMeta& m = *args.meta;
  const int64_t T = args.q.dim(0), H = d.n_heads, Dn = d.qk_nope_head_dim, Dv = d.v_head_dim, R = d.kv_lora_rank,
                Dh = Dn + d.qk_rope_head_dim, kvb_rows = H * (Dn + Dv);
  float* w = a.array<float>(static_cast<size_t>(kvb_rows * R));  // [H*(Dn+Dv), R]: W_UK[h] rows, then W_UV[h] rows
  pool_.parallel_for(kvb_rows, 16, [&](int64_t begin, int64_t end, int) {
    for (int64_t r = begin; r < end; ++r) dequant_row(args.kv_b, r, w + r * R);
  });
  Tensor o = a.tensor(DType::F32, {T, H * Dv});  // [T, H*Dv]
  const int64_t S_max = max_context(m), per_worker = S_max + 2 * R;
  float* scratch = a.array<float>(static_cast<size_t>(pool_.n_threads() * per_worker));
  pool_.parallel_for(T * H, 1, [&](int64_t begin, int64_t end, int worker) {
    float* scores = scratch + worker * per_worker;
    float* q_abs = scores + S_max;
    float* ctx = q_abs + R;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t t = i / H, h = i % H, n = m.context_lens[static_cast<size_t>(t)];
      const int32_t seq = m.seq_index[static_cast<size_t>(t)];
      const float* q_nope = args.q.data_as<float>() + t * H * Dh + h * Dh;
      const float* q_rope = q_nope + Dn;
      const float* w_uk = w + h * (Dn + Dv) * R;  // [Dn, R]
      const float* w_uv = w_uk + Dn * R;          // [Dv, R]
      std::fill(q_abs, q_abs + R, 0.0f);
      for (int64_t e = 0; e < Dn; ++e) {
        for (int64_t r = 0; r < R; ++r) q_abs[r] += q_nope[e] * w_uk[e * R + r];
      }
      for (int64_t j = 0; j < n; ++j) {
        const float* row = cache_row(args.kv_cache, m, seq, j);
        scores[j] = (dot(q_abs, row, R) + dot(q_rope, row + R, d.qk_rope_head_dim)) * args.softmax_scale;
      }
      softmax_inplace(scores, n);
      std::fill(ctx, ctx + R, 0.0f);
      for (int64_t j = 0; j < n; ++j) {
        const float* c = cache_row(args.kv_cache, m, seq, j);
        for (int64_t r = 0; r < R; ++r) ctx[r] += scores[j] * c[r];
      }
      float* out = o.data_as<float>() + t * H * Dv + h * Dv;
      for (int64_t e = 0; e < Dv; ++e) out[e] = dot(w_uv + e * R, ctx, R);
    }
  });
  return o;
}

}  // namespace quatre::cpu
