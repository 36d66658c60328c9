// MLA attention over the paged latent cache, online softmax. Depends on CUDA only.
// Absorbed: q_abs = W_UKᵀ q_nope [R]; s_j = (q_abs·c_j + q_rope·k_rope_j)·scale; ctx = Σ p_j c_j; o = W_UV ctx.
// Naive: k_nope_j = W_UK c_j and v_j = W_UV c_j expanded per key; s_j = (q_nope·k_nope_j + q_rope·k_rope_j)·scale;
// o = Σ p_j v_j.
// Absorbed with R <= 256 (every Mistral Small 4 config), three kernels: q_abs for all tokens with W_UK read once
// per block of 32 tokens (at one or two tokens, a block per (head, 128 columns) with 16-byte weight loads,
// QUATRE_CUDA_MLA_QABS_SMALL=0 turns it off); the attention over the cache per (token, heads, key split): on the
// tensor cores (mla_tc.cu) for BF16 and FP8 caches, else the tiled CUDA-core kernel below (8 heads, a tile of 32
// cache rows in shared memory shared by them); the combine of the splits' partial contexts and W_UV, per (token,
// head, 32 output columns), or from 16 tokens per (head, 16 tokens). These read kv_b as stored (any float type, times its scale). Otherwise one block (4
// warps) per (token, head) over kv_b dequantised to fp32 [H*(Dn+Dv), R].
#include <algorithm>

#include "backend/cuda/device_math.cuh"
#include "backend/cuda/pdl.cuh"

namespace quatre::cuda {
namespace {

constexpr int kWarps = 4;

// Element i of the cache pool (F32, BF16 or FP8 E4M3 with scale 1), as fp32.
__device__ __forceinline__ float cache_at(const MlaLaunch& a, int64_t i) { return load_weight(a.cache, a.cache_type, i); }
constexpr int kMaxPerLane = 16;  // accumulator width / 32: R (absorbed) or Dv (naive) <= 512

__global__ void __launch_bounds__(128) mla_kernel(MlaLaunch a) {
  extern __shared__ float smem[];
  const int64_t t = blockIdx.x / a.H, h = blockIdx.x % a.H;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t Dh = a.Dn + a.Dr, width = a.R + a.Dr;
  const int64_t acc_width = a.naive ? a.Dv : a.R;
  float* qa = smem;                            // [R] absorbed query, or [Dn] q_nope (naive)
  float* qr = qa + max(a.R, a.Dn);             // [Dr]
  float* part = qr + a.Dr;                     // [kWarps][acc_width]
  float* stats = part + kWarps * acc_width;    // [kWarps][2] running max, sum
  float* ctx = stats + 2 * kWarps;             // [acc_width]
  const float* q = a.q + t * a.H * Dh + h * Dh;
  const float* w_uk = a.kv_b + h * (a.Dn + a.Dv) * a.R;  // [Dn, R]
  const float* w_uv = w_uk + a.Dn * a.R;                 // [Dv, R]
  for (int64_t i = threadIdx.x; i < a.Dr; i += blockDim.x) qr[i] = q[a.Dn + i];
  if (a.naive) {
    for (int64_t i = threadIdx.x; i < a.Dn; i += blockDim.x) qa[i] = q[i];
  } else {
    for (int64_t r = threadIdx.x; r < a.R; r += blockDim.x) {
      float s = 0;
      for (int64_t e = 0; e < a.Dn; ++e) s = fmaf(q[e], w_uk[e * a.R + r], s);
      qa[r] = s;
    }
  }
  __syncthreads();

  const int32_t seq = a.seq_index[t], n = a.context_lens[t];
  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks_per_seq;
  float m = -INFINITY, l = 0;
  float acc[kMaxPerLane] = {};
  for (int32_t j = warp; j < n; j += kWarps) {
    const int64_t row = (static_cast<int64_t>(table[j / a.block_size]) * a.block_size + j % a.block_size) * width;
    float s = 0, nope = 0;  // s: per-lane partial sums; nope: the naive q_nope·k_nope, the same on every lane
    for (int64_t i = lane; i < a.Dr; i += 32) s = fmaf(qr[i], cache_at(a, row + a.R + i), s);
    if (a.naive) {
      for (int64_t e = 0; e < a.Dn; ++e) {  // q_nope · (W_UK c_j), one k_nope element at a time
        float k = 0;
        for (int64_t r = lane; r < a.R; r += 32) k = fmaf(w_uk[e * a.R + r], cache_at(a, row + r), k);
        nope = fmaf(qa[e], warp_sum(k), nope);
      }
    } else {
      for (int64_t r = lane; r < a.R; r += 32) s = fmaf(qa[r], cache_at(a, row + r), s);
    }
    s = (warp_sum(s) + nope) * a.softmax_scale;
    const float m_new = fmaxf(m, s);
    const float correction = expf(m - m_new), p = expf(s - m_new);
    l = l * correction + p;
    m = m_new;
    if (a.naive) {
      for (int64_t e = 0; e < a.Dv; ++e) {  // v_j[e] = W_UV[e] · c_j; lane e % 32 keeps it
        float v = 0;
        for (int64_t r = lane; r < a.R; r += 32) v = fmaf(w_uv[e * a.R + r], cache_at(a, row + r), v);
        v = warp_sum(v);
        if (e % 32 == lane) acc[e / 32] = acc[e / 32] * correction + p * v;
      }
    } else {
#pragma unroll
      for (int i = 0; i < kMaxPerLane; ++i) {
        const int64_t r = lane + 32 * i;
        if (r < a.R) acc[i] = acc[i] * correction + p * cache_at(a, row + r);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int64_t c = lane + 32 * i;
    if (c < acc_width) part[warp * acc_width + c] = acc[i];
  }
  if (lane == 0) stats[2 * warp] = m, stats[2 * warp + 1] = l;
  __syncthreads();
  float m_all = -INFINITY;
  for (int w = 0; w < kWarps; ++w) m_all = fmaxf(m_all, stats[2 * w]);
  float l_all = 0;
  for (int w = 0; w < kWarps; ++w) l_all += stats[2 * w] == -INFINITY ? 0.0f : stats[2 * w + 1] * expf(stats[2 * w] - m_all);
  for (int64_t c = threadIdx.x; c < acc_width; c += blockDim.x) {
    float s = 0;
    for (int w = 0; w < kWarps; ++w) {
      if (stats[2 * w] != -INFINITY) s += part[w * acc_width + c] * expf(stats[2 * w] - m_all);
    }
    ctx[c] = s / l_all;
  }
  __syncthreads();
  float* o = a.o + t * a.H * a.Dv + h * a.Dv;
  if (a.naive) {
    for (int64_t e = threadIdx.x; e < a.Dv; e += blockDim.x) o[e] = ctx[e];
    return;
  }
  for (int64_t e = warp; e < a.Dv; e += kWarps) {
    float s = 0;
    for (int64_t r = lane; r < a.R; r += 32) s = fmaf(w_uv[e * a.R + r], ctx[r], s);
    s = warp_sum(s);
    if (lane == 0) o[e] = s;
  }
}

// Element i of a stored weight of type KT (a float type), as fp32 without the scale.
template <WType KT>
__device__ __forceinline__ float weight_at(const void* w, int64_t i) {
  return WTraits<KT>::to_f32(static_cast<const typename WTraits<KT>::S*>(w)[i]);
}

// q_abs[t, h, :] = W_UK[h]ᵀ q_nope[t, h]. Grid (H, R/32, T/32): a lane per latent column r, the 4 warps over the
// Dn rows of W_UK in slices of 16 (held in registers), each slice applied to the block's 32 tokens; W_UK is read
// once per 32 tokens by 256 blocks at the model's dims.
constexpr int kQAbsCols = 32, kQAbsTokens = 32, kQAbsSlice = 16;

template <WType KT>
__global__ void __launch_bounds__(128) mla_q_abs_kernel(MlaLaunch a) {
  extern __shared__ float4 qn4[];                       // [kQAbsTokens][Dn16] q_nope, zero-padded
  __shared__ float part[kWarps][kQAbsTokens][kQAbsCols];  // per-warp partial sums
  float* qn = reinterpret_cast<float*>(qn4);
  const int64_t h = blockIdx.x, R = a.R, Dn = a.Dn, Dh = a.Dn + a.Dr;
  const int64_t Dn16 = (Dn + kQAbsSlice - 1) / kQAbsSlice * kQAbsSlice;
  const int64_t t0 = static_cast<int64_t>(blockIdx.z) * kQAbsTokens;
  const int n_t = static_cast<int>(min(static_cast<int64_t>(kQAbsTokens), a.T - t0));
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t r = static_cast<int64_t>(blockIdx.y) * kQAbsCols + lane;
  const int d16 = static_cast<int>(Dn16);
  batched_copy<4>(
      kQAbsTokens * d16, static_cast<int>(threadIdx.x), blockDim.x,
      [&](int i) {
        const int t = i / d16, e = i % d16;
        return t < n_t && e < Dn ? a.q[(t0 + t) * a.H * Dh + h * Dh + e] : 0.0f;
      },
      [&](int i, float v) { qn[i] = v; });
  __syncthreads();
  const int64_t w_row0 = h * (a.Dn + a.Dv);  // W_UK[h] = kv_b rows [w_row0, w_row0 + Dn)
  float acc[kQAbsTokens] = {};
  for (int64_t e0 = warp * kQAbsSlice; e0 < Dn; e0 += kWarps * kQAbsSlice) {
    float w[kQAbsSlice];
#pragma unroll
    for (int k = 0; k < kQAbsSlice; ++k) {
      w[k] = e0 + k < Dn && r < R ? weight_at<KT>(a.kv_b_w.w, (w_row0 + e0 + k) * R + r) * a.kv_b_w.scale : 0.0f;
    }
#pragma unroll
    for (int t = 0; t < kQAbsTokens; ++t) {
      if (t >= n_t) break;
      const float4* q4 = reinterpret_cast<const float4*>(qn + t * Dn16 + e0);
#pragma unroll
      for (int k = 0; k < kQAbsSlice / 4; ++k) {
        const float4 v = q4[k];
        acc[t] = fmaf(v.x, w[4 * k], acc[t]);
        acc[t] = fmaf(v.y, w[4 * k + 1], acc[t]);
        acc[t] = fmaf(v.z, w[4 * k + 2], acc[t]);
        acc[t] = fmaf(v.w, w[4 * k + 3], acc[t]);
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kQAbsTokens; ++t) part[warp][t][lane] = acc[t];
  __syncthreads();
  for (int i = static_cast<int>(threadIdx.x); i < n_t * kQAbsCols; i += static_cast<int>(blockDim.x)) {
    const int t = i / kQAbsCols, c = i % kQAbsCols;
    const int64_t col = static_cast<int64_t>(blockIdx.y) * kQAbsCols + c;
    if (col >= R) continue;
    float s = 0;
    for (int w = 0; w < kWarps; ++w) s += part[w][t][c];
    a.q_abs[((t0 + t) * a.H + h) * R + col] = s;
  }
}

// q_abs for one or two tokens (decode at batch 1-2), where the kernel above waits on two rounds of one-element weight
// loads. Grid (H, R/128): a block per (head, 128 latent columns), 256 threads; thread i takes the 16-byte chunk i %
// (128 / E) of the block's columns (E weights a chunk) in the rows i / (128 / E), + P, ... (P rows a pass), all its
// chunks loaded at once, before q_nope is waited for; the P partial sums of a column meet in shared memory in row
// order. Needs R % 16 == 0 (16-byte chunks at FP8) and a 16-byte aligned kv_b.
constexpr int kQAbsSmallTokens = 2, kQAbsSmallCols = 128, kQAbsSmallThreads = 256, kQAbsSmallBatch = 8;

template <WType KT>
__global__ void __launch_bounds__(kQAbsSmallThreads) mla_q_abs_small_kernel(MlaLaunch a) {
  using S = typename WTraits<KT>::S;
  constexpr int E = 16 / static_cast<int>(sizeof(S));     // weights a chunk
  constexpr int kChunks = kQAbsSmallCols / E;              // chunks across the block's columns
  constexpr int P = kQAbsSmallThreads / kChunks;           // rows a pass
  extern __shared__ float4 smem_small[];
  float* qn = reinterpret_cast<float*>(smem_small);        // [T][Dn]
  float* red = qn + kQAbsSmallTokens * a.Dn;               // [P][T][kQAbsSmallCols]
  const int64_t h = blockIdx.x, c0 = static_cast<int64_t>(blockIdx.y) * kQAbsSmallCols, R = a.R, Dn = a.Dn;
  const int T = static_cast<int>(a.T), tid = static_cast<int>(threadIdx.x), ch = tid % kChunks, g = tid / kChunks;
  const int64_t col = c0 + static_cast<int64_t>(ch) * E;
  const bool active = col < R;
  const S* w = static_cast<const S*>(a.kv_b_w.w) + h * (a.Dn + a.Dv) * R + col;  // W_UK[h][row, col..col+E)
  float acc[kQAbsSmallTokens][E] = {};
  const int n_batches = static_cast<int>((Dn + P * kQAbsSmallBatch - 1) / (P * kQAbsSmallBatch));  // the same for all
  for (int bi = 0; bi < n_batches; ++bi) {
    uint4 raw[kQAbsSmallBatch];
#pragma unroll
    for (int b = 0; b < kQAbsSmallBatch; ++b) {
      const int64_t e = g + static_cast<int64_t>(P) * (bi * kQAbsSmallBatch + b);
      raw[b] = active && e < Dn ? *reinterpret_cast<const uint4*>(w + e * R) : make_uint4(0, 0, 0, 0);
    }
    if (bi == 0) {  // q_nope while the first weights are on their way
      pdl_begin();  // launched as a dependent (pdl.cuh): the weights were requested before the kernel ahead ended
      for (int i = tid; i < T * Dn; i += kQAbsSmallThreads) {
        qn[i] = a.q[(i / Dn) * a.H * (a.Dn + a.Dr) + h * (a.Dn + a.Dr) + i % Dn];
      }
      __syncthreads();
    }
#pragma unroll
    for (int b = 0; b < kQAbsSmallBatch; ++b) {
      const int64_t e = g + static_cast<int64_t>(P) * (bi * kQAbsSmallBatch + b);
      if (e >= Dn) break;
      float w[E];
#pragma unroll
      for (int c = 0; c < E / 4; ++c) {
        const float4 v = four_weights<KT>(raw[b], c);
        w[4 * c] = v.x, w[4 * c + 1] = v.y, w[4 * c + 2] = v.z, w[4 * c + 3] = v.w;
      }
#pragma unroll
      for (int t = 0; t < kQAbsSmallTokens; ++t) {
        const float q = t < T ? qn[t * Dn + e] : 0.0f;
#pragma unroll
        for (int i = 0; i < E; ++i) acc[t][i] = fmaf(q, w[i], acc[t][i]);
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kQAbsSmallTokens; ++t) {
#pragma unroll
    for (int i = 0; i < E; ++i) red[(g * kQAbsSmallTokens + t) * kQAbsSmallCols + ch * E + i] = acc[t][i];
  }
  __syncthreads();
  for (int i = tid; i < T * kQAbsSmallCols; i += kQAbsSmallThreads) {
    const int t = i / kQAbsSmallCols, c = i % kQAbsSmallCols;
    if (c0 + c >= R) continue;
    float sum = 0;
    for (int r = 0; r < P; ++r) sum += red[(r * kQAbsSmallTokens + t) * kQAbsSmallCols + c];
    a.q_abs[(t * a.H + h) * R + c0 + c] = sum * a.kv_b_w.scale;
  }
}

template <WType KT>
size_t q_abs_small_shared_bytes(int64_t Dn) {
  constexpr int P = kQAbsSmallThreads / (kQAbsSmallCols * static_cast<int>(sizeof(typename WTraits<KT>::S)) / 16);
  return static_cast<size_t>(kQAbsSmallTokens * Dn + P * kQAbsSmallTokens * kQAbsSmallCols) * sizeof(float);
}

bool q_abs_small_applies(const MlaLaunch& a) {
  static const bool on = env_switch_on("QUATRE_CUDA_MLA_QABS_SMALL");
  return on && a.T <= kQAbsSmallTokens && a.R % 16 == 0 && reinterpret_cast<uintptr_t>(a.kv_b_w.w) % 16 == 0;
}

// Four consecutive cache elements from element i (a multiple of 4), as fp32: one 16-, 8- or 4-byte load.
template <WType CT>
__device__ __forceinline__ float4 cache_quad(const void* cache, int64_t i) {
  if constexpr (CT == WType::kF32) {
    return *reinterpret_cast<const float4*>(static_cast<const float*>(cache) + i);
  } else if constexpr (CT == WType::kBF16) {
    const uint2 u = *reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(cache) + i);
    return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u), __uint_as_float(u.y << 16),
                       __uint_as_float(u.y & 0xffff0000u));
  } else if constexpr (CT == WType::kF16) {
    const uint2 u = *reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(cache) + i);
    using F16 = WTraits<WType::kF16>;
    return make_float4(F16::to_f32(static_cast<uint16_t>(u.x)), F16::to_f32(static_cast<uint16_t>(u.x >> 16)),
                       F16::to_f32(static_cast<uint16_t>(u.y)), F16::to_f32(static_cast<uint16_t>(u.y >> 16)));
  } else {
    static_assert(CT == WType::kF8E4M3);
    const uint32_t u = *reinterpret_cast<const uint32_t*>(static_cast<const uint8_t*>(cache) + i);
    using F8 = WTraits<WType::kF8E4M3>;
    return make_float4(F8::to_f32(static_cast<uint8_t>(u)), F8::to_f32(static_cast<uint8_t>(u >> 8)),
                       F8::to_f32(static_cast<uint8_t>(u >> 16)), F8::to_f32(static_cast<uint8_t>(u >> 24)));
  }
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}


// Absorbed attention for R <= 256. Grid (T * ceil(H/8), n_splits): one block per (token t, heads h0..h0+7, key
// split). The split's keys go through shared memory in tiles of 32 rows [R+Dr] (row stride R+Dr+4: the score pass
// reads a row per lane with 16-byte loads without bank conflicts). Per tile: warp w scores heads w and w+4 (a key
// per lane, online-softmax state per head on every lane); then thread i updates the contexts of all 8 heads at
// latent columns i and i+128. Writes the unnormalised partial contexts [R] and their (max, sum) per (t, h, split):
// into split_ctx, or, with one split, over the block's own q_abs rows (read into shared memory first, read by no
// other block).
constexpr int kHeads = 8;
constexpr int kTileKeys = 32;
constexpr int kTileCols = 2;  // latent columns per thread: R <= 128 * kTileCols

template <WType CT>
__global__ void __launch_bounds__(128) mla_tiled_kernel(MlaLaunch a) {
  pdl_begin();  // the combine after it may load its weights meanwhile (pdl.cuh)
  extern __shared__ float4 smem4[];
  const int64_t R = a.R, width = a.R + a.Dr, stride = width + 4, Dh = a.Dn + a.Dr;
  float* tile = reinterpret_cast<float*>(smem4);  // [kTileKeys][stride]
  float* qs = tile + kTileKeys * stride;          // [kHeads][width]: q_abs then q_rope of each head
  float* ps = qs + kHeads * width;                // [kTileKeys][kHeads] probabilities of the tile
  float* corr = ps + kTileKeys * kHeads;          // [kHeads] rescaling of the running contexts
  const int64_t n_groups = (a.H + kHeads - 1) / kHeads;
  const int64_t t = blockIdx.x / n_groups, h0 = (blockIdx.x % n_groups) * kHeads;
  const int n_heads = static_cast<int>(min(static_cast<int64_t>(kHeads), a.H - h0));
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int w32 = static_cast<int>(width);
  batched_copy<10>(
      kHeads * w32, tid, blockDim.x,
      [&](int i) {
        const int g = i / w32, c = i % w32;
        const int64_t h = h0 + g;
        if (g >= n_heads) return 0.0f;
        return c < R ? a.q_abs[(t * a.H + h) * R + c] : a.q[t * a.H * Dh + h * Dh + a.Dn + c - R];
      },
      [&](int i, float v) { qs[i] = v; });

  const int32_t seq = a.seq_index[t], n = a.context_lens[t];
  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks_per_seq;
  const int32_t split = static_cast<int32_t>(blockIdx.y);
  const int32_t chunk = ((n + kTileKeys - 1) / kTileKeys + a.n_splits - 1) / a.n_splits * kTileKeys;
  const int32_t j_begin = split * chunk, j_end = min(n, j_begin + chunk);
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0, 0};  // heads warp and warp + 4
  float acc[kHeads][kTileCols] = {};
  const int64_t quads = width / 4;
  // The q rows and each tile go into shared memory ten loads in flight a thread: 20 a thread at the model's dims
  // (8 heads x 320 floats, 32 keys x 80 quads over 128 threads), so two waits on memory instead of twenty.
  __shared__ int64_t key_row[kTileKeys];  // cache row of each key of the tile; -1 past the split
  const int q32 = static_cast<int>(quads);
  for (int32_t j0 = j_begin; j0 < j_end; j0 += kTileKeys) {
    const int n_keys = min(kTileKeys, j_end - j0);
    __syncthreads();  // the previous tile is consumed (and, the first time, qs is written)
    tile_key_rows(a, table, j0, n_keys, kTileKeys, key_row);
    __syncthreads();
    batched_copy<10>(
        kTileKeys * q32, tid, blockDim.x,
        [&](int i) {  // rows past the split stay zero: 0 · p = 0 even over a poisoned cache
          const int64_t row = key_row[i / q32];
          return row >= 0 ? cache_quad<CT>(a.cache, row * width + 4 * (i % q32)) : make_float4(0, 0, 0, 0);
        },
        [&](int i, float4 v) { *reinterpret_cast<float4*>(tile + (i / q32) * stride + 4 * (i % q32)) = v; });
    __syncthreads();
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const int g = warp + 4 * k;
      const float4* q4 = reinterpret_cast<const float4*>(qs + g * width);
      const float4* c4 = reinterpret_cast<const float4*>(tile + lane * stride);
      float4 d = make_float4(0, 0, 0, 0);  // four chains, a quarter as long as one (a lane waited on each fma)
      for (int64_t i = 0; i < quads; ++i) {
        const float4 qv = q4[i], cv = c4[i];
        d = make_float4(fmaf(qv.x, cv.x, d.x), fmaf(qv.y, cv.y, d.y), fmaf(qv.z, cv.z, d.z), fmaf(qv.w, cv.w, d.w));
      }
      float s = (d.x + d.y) + (d.z + d.w);
      s = lane < n_keys ? s * a.softmax_scale : -INFINITY;
      const float m_new = fmaxf(m[k], warp_max(s));  // finite: the tile has a key
      const float c = expf(m[k] - m_new), p = expf(s - m_new);
      l[k] = l[k] * c + warp_sum(p);
      m[k] = m_new;
      ps[lane * kHeads + g] = p;
      if (lane == 0) corr[g] = c;
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < kHeads; ++g) {
#pragma unroll
      for (int i = 0; i < kTileCols; ++i) acc[g][i] *= corr[g];
    }
    for (int k = 0; k < n_keys; ++k) {
      const float4 p_lo = reinterpret_cast<const float4*>(ps + k * kHeads)[0];
      const float4 p_hi = reinterpret_cast<const float4*>(ps + k * kHeads)[1];
      const float p[kHeads] = {p_lo.x, p_lo.y, p_lo.z, p_lo.w, p_hi.x, p_hi.y, p_hi.z, p_hi.w};
#pragma unroll
      for (int i = 0; i < kTileCols; ++i) {
        const int64_t col = tid + 128 * i;
        const float cv = col < R ? tile[k * stride + col] : 0.0f;
#pragma unroll
        for (int g = 0; g < kHeads; ++g) acc[g][i] = fmaf(p[g], cv, acc[g][i]);
      }
    }
  }
  float* ctx = a.n_splits > 1 ? a.split_ctx : a.q_abs;  // [T*H*n_splits, R]
#pragma unroll
  for (int g = 0; g < kHeads; ++g) {
    if (g >= n_heads) break;
    const int64_t at = (t * a.H + h0 + g) * a.n_splits + split;
#pragma unroll
    for (int i = 0; i < kTileCols; ++i) {
      const int64_t col = tid + 128 * i;
      if (col < R) ctx[at * R + col] = acc[g][i];
    }
  }
#pragma unroll
  for (int k = 0; k < 2; ++k) {
    const int g = warp + 4 * k;
    if (g < n_heads && lane == 0) {
      const int64_t at = (t * a.H + h0 + g) * a.n_splits + split;
      a.split_ml[2 * at] = m[k], a.split_ml[2 * at + 1] = l[k];
    }
  }
}

// One block of 16 warps per (token, head, 32 output columns): ctx = Σ_s ctx_s e^(m_s - M) / Σ_s l_s e^(m_s - M),
// then o[e] = W_UV[e] · ctx for the block's columns e, a warp per 2 columns with all its W_UV loads in flight, issued
// at the start (QUATRE_CUDA_MLA_COMBINE_PREFETCH=0: after the splits' sum). (With 4 warps a block, at batch 1 one
// warp a scheduler waited ~27 cycles an instruction: 29 us a call on an H100.)
constexpr int kCombineWarps = 16;
constexpr int kCombineCols = 32, kCombineRows = kCombineCols / kCombineWarps, kCombinePerLane = 8;  // R <= 256
constexpr int kMaxSplits = 256;       // what the combine takes (its factors in shared memory)
constexpr int kMaxSplitsTiled = 64;   // what mla_splits gives the CUDA-core key pass (four blocks an SM of 53 KB)

// The splits' merge factors of one (token, head) by a warp: factor[s] = exp(m_s − M) / Σ_s' l_s' · exp(m_s' − M),
// M the splits' max (finite: the first split has a key), lane i over splits i, i + 32, ... in order.
__device__ __forceinline__ void split_factors(const float* ml, int n_splits, int lane, float* factor) {
  float M = -INFINITY;
  for (int s = lane; s < n_splits; s += 32) M = fmaxf(M, ml[2 * s]);
  M = warp_max(M);
  float L = 0.0f;
  for (int s = lane; s < n_splits; s += 32) {
    const float m = ml[2 * s], e = m == -INFINITY ? 0.0f : expf(m - M);
    factor[s] = e;
    if (e != 0.0f) L += ml[2 * s + 1] * e;
  }
  L = warp_sum(L);
  for (int s = lane; s < n_splits; s += 32) factor[s] /= L;
}

template <WType KT, bool kPrefetch>
__global__ void __launch_bounds__(32 * kCombineWarps) mla_combine_kernel(MlaLaunch a) {
  extern __shared__ float ctx[];  // [R], then the threads' partial quads
  __shared__ float factor[kMaxSplits];
  const int64_t th = blockIdx.x, t = th / a.H, h = th % a.H, R = a.R;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t e0 = static_cast<int64_t>(blockIdx.y) * kCombineCols + warp * kCombineRows;
  const int64_t w_row0 = h * (a.Dn + a.Dv) + a.Dn;  // W_UV[h] = kv_b rows [w_row0, w_row0 + Dv)
  // kPrefetch: this lane's W_UV weights first, so that their load overlaps the splits' (one dependent round trip less).
  float wv[kCombineRows][kCombinePerLane];
  const auto w_uv = [&](int i, int k) {
    const int64_t e = e0 + i, r = lane + 32 * k;
    return e < a.Dv && r < R ? weight_at<KT>(a.kv_b_w.w, (w_row0 + e) * R + r) : 0.0f;
  };
  if constexpr (kPrefetch) {
#pragma unroll
    for (int i = 0; i < kCombineRows; ++i) {
#pragma unroll
      for (int k = 0; k < kCombinePerLane; ++k) wv[i][k] = w_uv(i, k);
    }
  }
  // Launched as a dependent (pdl.cuh): the weights above were requested while the key pass still ran; o_proj's
  // copies may start now.
  pdl_begin();
  const float* ml = a.split_ml + 2 * th * a.n_splits;
  const float* part = (a.n_splits > 1 ? a.split_ctx : a.q_abs) + th * a.n_splits * R;  // [n_splits, R]
  if (warp == 0) split_factors(ml, a.n_splits, lane, factor);
  __syncthreads();
  // ctx = Σ_s factor[s] · part[s]: thread i takes the 4 columns of quad i % (R/4) over every (512/(R/4))-th split,
  // 16-byte loads, 8 in flight (one column a thread over all 64 splits waited on L2 16 times: 23 us a layer on an
  // H100); the threads' partial quads meet in shared memory in a fixed order (R % 4 == 0 on the tiled path).
  const int quads = static_cast<int>(R / 4), n_parts = static_cast<int>(blockDim.x) / quads;
  const int q = static_cast<int>(threadIdx.x) % quads, part_of = static_cast<int>(threadIdx.x) / quads;
  float4* partial = reinterpret_cast<float4*>(ctx + R);  // [n_parts][quads]
  if (part_of < n_parts) {
    const float4* part4 = reinterpret_cast<const float4*>(part);
    float4 c = make_float4(0, 0, 0, 0);
#pragma unroll 8
    for (int s = part_of; s < a.n_splits; s += n_parts) {
      const float4 v = part4[s * quads + q];
      const float f = factor[s];
      c = make_float4(fmaf(v.x, f, c.x), fmaf(v.y, f, c.y), fmaf(v.z, f, c.z), fmaf(v.w, f, c.w));
    }
    partial[part_of * quads + q] = c;
  }
  __syncthreads();
  for (int r = static_cast<int>(threadIdx.x); r < R; r += static_cast<int>(blockDim.x)) {
    float c = 0;
    for (int j = 0; j < n_parts; ++j) c += reinterpret_cast<const float*>(partial)[j * R + r];
    ctx[r] = c;
  }
  __syncthreads();
  float s[kCombineRows] = {};
#pragma unroll
  for (int i = 0; i < kCombineRows; ++i) {
#pragma unroll
    for (int k = 0; k < kCombinePerLane; ++k) {
      const int r = lane + 32 * k;
      if (r < R) s[i] = fmaf(kPrefetch ? wv[i][k] : w_uv(i, k), ctx[r], s[i]);
    }
  }
#pragma unroll
  for (int i = 0; i < kCombineRows; ++i) {
    const float v = warp_sum(s[i]) * a.kv_b_w.scale;
    if (lane == 0 && e0 + i < a.Dv) a.o[t * a.H * a.Dv + h * a.Dv + e0 + i] = v;
  }
}

// One block of 256 threads per (head, kCombineTokens tokens): each token's splits merged into ctx [R] in shared
// memory (warp w makes the factors of tokens w, w + 8, as mla_combine_kernel does; then a thread a column, the splits
// summed in order), then o[t, e] = W_UV[e] · ctx_t: thread (e, parity) walks W_UV row e once in 16-byte loads and
// keeps the sums of 8 tokens, each over k in order (the same order for any batch). So W_UV is read once for 16
// tokens: mla_combine_kernel, a block per (token, head, 32 columns) reading W_UV a byte a lane, took 2.2 ms of a
// batch-64 step and 7.8 of a batch-256 one (H100, 16 FP8 layers, context 2048; here 0.77 at 256, the steps 25.37 ->
// 23.70 and 45.57 -> 37.67 ms). Below 16 tokens the other has more blocks: batch 1 0.29 ms there, 0.44 here (2.74
// against 2.99 ms a step), batch 8 7.29 against 7.40. Launch: R % 16 == 0, W_UV rows 16-byte aligned.
constexpr int kCombineTokens = 16;
constexpr int kCombineTokenThreads = 256;

template <WType KT>
__global__ void __launch_bounds__(kCombineTokenThreads) mla_combine_tokens_kernel(MlaLaunch a) {
  using S = typename WTraits<KT>::S;
  constexpr int kVec = 16 / static_cast<int>(sizeof(S));
  constexpr int kPerThread = kCombineTokens / (kCombineTokenThreads / 128);  // tokens a thread sums: 8
  extern __shared__ __align__(16) float combine_smem[];
  const int R = static_cast<int>(a.R), n_splits = a.n_splits;
  float* ctx = combine_smem;                               // [kCombineTokens][R]
  float* factor = combine_smem + kCombineTokens * R;      // [kCombineTokens][n_splits]
  const int64_t h = blockIdx.x, t0 = static_cast<int64_t>(blockIdx.y) * kCombineTokens;
  const int n_tok = static_cast<int>(min(static_cast<int64_t>(kCombineTokens), a.T - t0));
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  pdl_begin();  // the splits come from the key pass ahead (pdl.cuh)
  for (int j = warp; j < n_tok; j += kCombineTokenThreads / 32) {
    split_factors(a.split_ml + 2 * ((t0 + j) * a.H + h) * n_splits, n_splits, lane, factor + j * n_splits);
  }
  __syncthreads();
  for (int i = tid; i < kCombineTokens * R; i += kCombineTokenThreads) {
    const int j = i / R, r = i % R;
    float c = 0.0f;  // tokens past the batch: zeros, never stored
    if (j < n_tok) {
      const int64_t th = (t0 + j) * a.H + h;
      const float* part = (n_splits > 1 ? a.split_ctx : a.q_abs) + th * n_splits * R + r;  // [n_splits, R]
#pragma unroll 8
      for (int s = 0; s < n_splits; ++s) c = fmaf(part[static_cast<int64_t>(s) * R], factor[j * n_splits + s], c);
    }
    ctx[i] = c;
  }
  __syncthreads();
  const int parity = tid / 128;
  const int64_t w_row0 = h * (a.Dn + a.Dv) + a.Dn;  // W_UV[h] = kv_b rows [w_row0, w_row0 + Dv)
  for (int64_t e = tid % 128; e < a.Dv; e += 128) {
    const S* row = static_cast<const S*>(a.kv_b_w.w) + (w_row0 + e) * R;
    float sum[kPerThread] = {};
#pragma unroll 4
    for (int r0 = 0; r0 < R; r0 += kVec) {
      const uint4 raw = __ldg(reinterpret_cast<const uint4*>(row + r0));
#pragma unroll
      for (int c = 0; c < kVec / 4; ++c) {
        const float4 w = four_weights<KT>(raw, c);
#pragma unroll
        for (int i = 0; i < kPerThread; ++i) {
          const float4 x = *reinterpret_cast<const float4*>(ctx + (parity + 2 * i) * R + r0 + 4 * c);
          sum[i] = fmaf(w.w, x.w, fmaf(w.z, x.z, fmaf(w.y, x.y, fmaf(w.x, x.x, sum[i]))));
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int j = parity + 2 * i;
      if (j < n_tok) a.o[((t0 + j) * a.H + h) * a.Dv + e] = sum[i] * a.kv_b_w.scale;
    }
  }
}

int g_combine_tokens_test_mode = -1;  // set_mla_combine_tokens_for_tests

bool combine_tokens_applies(const MlaLaunch& a) {
  static const bool on = env_switch_on("QUATRE_CUDA_MLA_COMBINE_TOKENS");
  // R % 16 == 0: every row of kv_b starts 16-byte aligned, whatever its float type.
  return switch_on(g_combine_tokens_test_mode, on) && (a.T >= kCombineTokens || g_combine_tokens_test_mode == 1) &&
         a.R % 16 == 0 &&
         reinterpret_cast<uintptr_t>(a.kv_b_w.w) % 16 == 0 && a.kv_b_w.type != WType::kInt4;
}

size_t tiled_shared_bytes(const MlaLaunch& a) {
  const int64_t width = a.R + a.Dr;
  return static_cast<size_t>(kTileKeys * (width + 4) + kHeads * width + kTileKeys * kHeads + kHeads) * sizeof(float);
}

template <typename Kernel>
cudaError_t allow_shared(Kernel kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}

// A kernel that reads W_UK or W_UV before its pdl_wait, launched as a dependent (pdl.cuh) only when those are the
// stored weights: a dequantised copy (4-bit kv_b) is written by a kernel of the same step.
cudaError_t launch_reading_kv_b(void (*kernel)(MlaLaunch), const MlaLaunch& a, dim3 grid, int threads, size_t shared,
                                cudaStream_t stream) {
  if (a.kv_b_w_stored) return launch_dependent(kernel, grid, threads, shared, stream, a);
  kernel<<<grid, threads, shared, stream>>>(a);
  return cudaGetLastError();
}

cudaError_t launch_mla_tiled(const MlaLaunch& a, cudaStream_t stream, MlaStage stage) {
  if (a.q_abs == nullptr || a.split_ml == nullptr || a.n_splits > kMaxSplits ||
      (a.n_splits > 1 && a.split_ctx == nullptr) || a.kv_b_w.w == nullptr) {
    return cudaErrorInvalidValue;
  }
  const bool all = stage == MlaStage::kAll;
  const cudaError_t q_abs = !all && stage != MlaStage::kQAbs ? cudaSuccess : dispatch_wtype(a.kv_b_w.type, [&](auto tag) {
    if (q_abs_small_applies(a)) {
      constexpr WType KT = decltype(tag)::value;
      const dim3 grid(static_cast<unsigned>(a.H), blocks_for(a.R, kQAbsSmallCols));
      const size_t shared = q_abs_small_shared_bytes<KT>(a.Dn);
      const cudaError_t e = allow_shared(mla_q_abs_small_kernel<KT>, shared);
      if (e != cudaSuccess) return e;
      return launch_reading_kv_b(mla_q_abs_small_kernel<KT>, a, grid, kQAbsSmallThreads, shared, stream);
    }
    const dim3 grid(static_cast<unsigned>(a.H), blocks_for(a.R, kQAbsCols), blocks_for(a.T, kQAbsTokens));
    const int64_t Dn16 = (a.Dn + kQAbsSlice - 1) / kQAbsSlice * kQAbsSlice;
    const size_t shared = static_cast<size_t>(kQAbsTokens * Dn16) * sizeof(float);
    const cudaError_t e = allow_shared(mla_q_abs_kernel<decltype(tag)::value>, shared);
    if (e != cudaSuccess) return e;
    mla_q_abs_kernel<decltype(tag)::value><<<grid, 32 * kWarps, shared, stream>>>(a);
    return cudaGetLastError();
  });
  if (q_abs != cudaSuccess) return q_abs;
  const bool attend_stage = all || stage == MlaStage::kAttend;
  const cudaError_t attend = !attend_stage ? cudaSuccess
                             : mla_attend_is_tc(a.R, a.Dr, a.naive, a.cache_type) ? launch_mla_attend_tc(a, stream)
                                                                                 : dispatch_wtype(a.cache_type, [&](auto tag) {
    const size_t shared = tiled_shared_bytes(a);
    const cudaError_t e = allow_shared(mla_tiled_kernel<decltype(tag)::value>, shared);
    if (e != cudaSuccess) return e;
    const dim3 grid(static_cast<unsigned>(a.T * ((a.H + kHeads - 1) / kHeads)), static_cast<unsigned>(a.n_splits));
    mla_tiled_kernel<decltype(tag)::value><<<grid, 32 * kWarps, shared, stream>>>(a);
    return cudaGetLastError();
  });
  if (attend != cudaSuccess || (!all && stage != MlaStage::kCombine)) return attend;
  if (combine_tokens_applies(a)) {
    return dispatch_wtype(a.kv_b_w.type, [&](auto tag) {
      const dim3 grid(static_cast<unsigned>(a.H), static_cast<unsigned>((a.T + kCombineTokens - 1) / kCombineTokens));
      const size_t shared = static_cast<size_t>(kCombineTokens * (a.R + a.n_splits)) * sizeof(float);
      auto kernel = mla_combine_tokens_kernel<decltype(tag)::value>;
      const cudaError_t e = allow_shared(kernel, shared);
      if (e != cudaSuccess) return e;
      return launch_reading_kv_b(kernel, a, grid, kCombineTokenThreads, shared, stream);
    });
  }
  return dispatch_wtype(a.kv_b_w.type, [&](auto tag) {
    const dim3 grid(static_cast<unsigned>(a.T * a.H), blocks_for(a.Dv, kCombineCols));
    const size_t shared = static_cast<size_t>(a.R + 4 * 32 * kCombineWarps) * sizeof(float);  // ctx [R], partial quads
    static const bool prefetch = env_switch_on("QUATRE_CUDA_MLA_COMBINE_PREFETCH");
    return prefetch ? launch_reading_kv_b(mla_combine_kernel<decltype(tag)::value, true>, a, grid,
                                          32 * kCombineWarps, shared, stream)
                    : launch_reading_kv_b(mla_combine_kernel<decltype(tag)::value, false>, a, grid,
                                          32 * kCombineWarps, shared, stream);
  });
}

}  // namespace

void set_mla_combine_tokens_for_tests(int mode) { g_combine_tokens_test_mode = mode; }

bool mla_is_tiled(int64_t R, int64_t Dr, bool naive, const void* cache) {
  return !naive && R <= 128 * kTileCols && R % 4 == 0 && Dr % 4 == 0 && reinterpret_cast<uintptr_t>(cache) % 16 == 0;
}

int mla_splits(int64_t T, int64_t H, int64_t R, int64_t Dr, bool naive, WType cache_type, int64_t max_context) {
  if (naive || R > 128 * kTileCols) return 1;
  const bool tc = mla_attend_is_tc(R, Dr, naive, cache_type);
  const int64_t heads = tc ? 32 : kHeads, tile_keys = tc ? mla_attend_tc_tile_keys(T, H, max_context) : kTileKeys;
  const int64_t blocks = T * ((H + heads - 1) / heads);
  // About four ~53 KB blocks per SM of an H100/H200 (132 SMs); two ~84 KB ones on the tensor-core path.
  const int64_t want = ((tc ? 2 : 4) * 132 + blocks - 1) / blocks;
  const int64_t tiles = std::max<int64_t>(1, (max_context + tile_keys - 1) / tile_keys);
  const int64_t splits = std::min<int64_t>({want, tiles, tc ? kMaxSplits : kMaxSplitsTiled});
  const int64_t per_split = (tiles + splits - 1) / splits;
  return static_cast<int>((tiles + per_split - 1) / per_split);  // no split left without keys
}

cudaError_t launch_mla(const MlaLaunch& a, cudaStream_t stream, MlaStage stage) {
  if (a.n_splits < 1) return cudaErrorInvalidValue;
  if (a.T == 0) return cudaSuccess;
  if (mla_is_tiled(a.R, a.Dr, a.naive, a.cache)) return launch_mla_tiled(a, stream, stage);
  if (stage != MlaStage::kAll && stage != MlaStage::kAttend) return cudaSuccess;
  if (a.n_splits != 1 || a.kv_b == nullptr) return cudaErrorInvalidValue;
  const int64_t acc_width = a.naive ? a.Dv : a.R;
  if (acc_width > 32 * kMaxPerLane || a.R + a.Dr + a.Dn + a.Dv > kMlaMaxWidth) return cudaErrorInvalidValue;
  const size_t shared = static_cast<size_t>(std::max(a.R, a.Dn) + a.Dr + (kWarps + 1) * acc_width + 2 * kWarps) * sizeof(float);
  mla_kernel<<<static_cast<unsigned>(a.T * a.H), 32 * kWarps, shared, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace quatre::cuda
