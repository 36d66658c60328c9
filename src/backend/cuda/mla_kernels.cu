// MLA attention over the paged latent cache, online softmax; one block (4 warps) per (token, head), or, absorbed
// with R <= 256, per (token, 8 heads) so that a cache row is read once for 8 heads.
// Absorbed: q_abs = W_UKᵀ q_nope [R]; s_j = (q_abs·c_j + q_rope·k_rope_j)·scale; ctx = Σ p_j c_j; o = W_UV ctx.
// Naive: k_nope_j = W_UK c_j and v_j = W_UV c_j expanded per key; s_j = (q_nope·k_nope_j + q_rope·k_rope_j)·scale;
// o = Σ p_j v_j. kv_b arrives dequantised to fp32 [H*(Dn+Dv), R]. The grouped absorbed kernel reads q_abs from a
// kernel of its own (once per token and head); with keys split over blocks, a combine kernel per (token, head,
// 32 output columns) merges the partial contexts and applies W_UV. Depends on CUDA only.
#include <algorithm>

#include "backend/cuda/device_math.cuh"

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

// Absorbed form for R <= 256, one block per (token, group of kHeads heads): each cache row is read once per group
// instead of once per head. Same math and summation structure as mla_kernel.
constexpr int kHeads = 8;
constexpr int kGroupPerLane = 8;  // R <= 256

__global__ void __launch_bounds__(128) mla_grouped_kernel(MlaLaunch a) {
  extern __shared__ float smem[];
  const int64_t n_groups = (a.H + kHeads - 1) / kHeads;
  const int64_t t = blockIdx.x / n_groups, h0 = (blockIdx.x % n_groups) * kHeads;
  const int n_heads = static_cast<int>(min(static_cast<int64_t>(kHeads), a.H - h0));
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t Dh = a.Dn + a.Dr, width = a.R + a.Dr, R = a.R;
  float* qa = smem;                          // [kHeads][R]; later the context
  float* qr = qa + kHeads * R;               // [kHeads][Dr]
  float* part = qr + kHeads * a.Dr;          // [kWarps][kHeads][R]
  float* stats = part + kWarps * kHeads * R; // [kWarps][kHeads][2]
  for (int64_t i = threadIdx.x; i < n_heads * R; i += blockDim.x) qa[i] = a.q_abs[(t * a.H + h0) * R + i];
  for (int64_t i = threadIdx.x; i < n_heads * a.Dr; i += blockDim.x) {
    const int64_t g = i / a.Dr, h = h0 + g;
    qr[i] = a.q[t * a.H * Dh + h * Dh + a.Dn + i % a.Dr];
  }
  __syncthreads();

  const int32_t seq = a.seq_index[t], n = a.context_lens[t];
  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks_per_seq;
  const int32_t split = static_cast<int32_t>(blockIdx.y), chunk = (n + a.n_splits - 1) / a.n_splits;
  const int32_t j_begin = split * chunk, j_end = min(n, j_begin + chunk);  // this block's keys
  float m[kHeads], l[kHeads], acc[kHeads][kGroupPerLane];
#pragma unroll
  for (int g = 0; g < kHeads; ++g) {
    m[g] = -INFINITY, l[g] = 0;
#pragma unroll
    for (int i = 0; i < kGroupPerLane; ++i) acc[g][i] = 0;
  }
  for (int32_t j = j_begin + warp; j < j_end; j += kWarps) {
    const int64_t row = (static_cast<int64_t>(table[j / a.block_size]) * a.block_size + j % a.block_size) * width;
    float c[kGroupPerLane];
#pragma unroll
    for (int i = 0; i < kGroupPerLane; ++i) c[i] = lane + 32 * i < R ? cache_at(a, row + lane + 32 * i) : 0.0f;
#pragma unroll
    for (int g = 0; g < kHeads; ++g) {
      if (g >= n_heads) break;
      float s = 0;
      for (int64_t i = lane; i < a.Dr; i += 32) s = fmaf(qr[g * a.Dr + i], cache_at(a, row + R + i), s);
#pragma unroll
      for (int i = 0; i < kGroupPerLane; ++i) {
        if (lane + 32 * i < R) s = fmaf(qa[g * R + lane + 32 * i], c[i], s);
      }
      s = warp_sum(s) * a.softmax_scale;
      const float m_new = fmaxf(m[g], s);
      const float correction = expf(m[g] - m_new), p = expf(s - m_new);
      l[g] = l[g] * correction + p;
      m[g] = m_new;
#pragma unroll
      for (int i = 0; i < kGroupPerLane; ++i) acc[g][i] = acc[g][i] * correction + p * c[i];
    }
  }
#pragma unroll
  for (int g = 0; g < kHeads; ++g) {
    if (g >= n_heads) break;
#pragma unroll
    for (int i = 0; i < kGroupPerLane; ++i) {
      if (lane + 32 * i < R) part[(warp * kHeads + g) * R + lane + 32 * i] = acc[g][i];
    }
    if (lane == 0) stats[(warp * kHeads + g) * 2] = m[g], stats[(warp * kHeads + g) * 2 + 1] = l[g];
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < n_heads * R; i += blockDim.x) {
    const int64_t g = i / R, r = i % R;
    float m_all = -INFINITY;
    for (int w = 0; w < kWarps; ++w) m_all = fmaxf(m_all, stats[(w * kHeads + g) * 2]);
    float l_all = 0, s = 0;
    for (int w = 0; w < kWarps; ++w) {
      const float mw = stats[(w * kHeads + g) * 2];
      if (mw == -INFINITY) continue;
      const float f = expf(mw - m_all);
      l_all += stats[(w * kHeads + g) * 2 + 1] * f;
      s += part[(w * kHeads + g) * R + r] * f;
    }
    if (a.n_splits > 1) {  // unnormalised partial context and its (max, sum), combined by mla_combine_kernel
      const int64_t at = ((t * a.H + h0 + g) * a.n_splits + split);
      a.split_ctx[at * R + r] = s;
      if (r == 0) a.split_ml[2 * at] = m_all, a.split_ml[2 * at + 1] = l_all;
    } else {
      qa[i] = s / l_all;  // the context of head h0 + g
    }
  }
  if (a.n_splits > 1) return;
  __syncthreads();
  for (int64_t i = warp; i < n_heads * a.Dv; i += kWarps) {
    const int64_t g = i / a.Dv, e = i % a.Dv, h = h0 + g;
    const float* w_uv = a.kv_b + (h * (a.Dn + a.Dv) + a.Dn + e) * R;
    float s = 0;
    for (int64_t r = lane; r < R; r += 32) s = fmaf(w_uv[r], qa[g * R + r], s);
    s = warp_sum(s);
    if (lane == 0) a.o[t * a.H * a.Dv + h * a.Dv + e] = s;
  }
}

// q_abs[t, h, :] = W_UK[h]ᵀ q_nope[t, h] [R], one block per (token, head), a thread per latent column r.
__global__ void __launch_bounds__(256) mla_q_abs_kernel(MlaLaunch a) {
  extern __shared__ float qn[];  // [Dn]
  const int64_t th = blockIdx.x, t = th / a.H, h = th % a.H, R = a.R;
  const float* q = a.q + t * a.H * (a.Dn + a.Dr) + h * (a.Dn + a.Dr);
  for (int64_t e = threadIdx.x; e < a.Dn; e += blockDim.x) qn[e] = q[e];
  __syncthreads();
  const float* w_uk = a.kv_b + h * (a.Dn + a.Dv) * R;  // [Dn, R]
  for (int64_t r = threadIdx.x; r < R; r += blockDim.x) {
    float s = 0;
    for (int64_t e = 0; e < a.Dn; ++e) s = fmaf(qn[e], w_uk[e * R + r], s);
    a.q_abs[th * R + r] = s;
  }
}

// One block per (token, head, 32 output columns): ctx = Σ_s ctx_s e^(m_s - M) / Σ_s l_s e^(m_s - M), then
// o[e] = W_UV[e] · ctx for the block's columns e.
constexpr int kCombineCols = 32;

__global__ void __launch_bounds__(128) mla_combine_kernel(MlaLaunch a) {
  extern __shared__ float ctx[];  // [R]
  const int64_t th = blockIdx.x, t = th / a.H, h = th % a.H, R = a.R;
  const int64_t e_begin = static_cast<int64_t>(blockIdx.y) * kCombineCols;
  const int64_t e_end = min(a.Dv, e_begin + kCombineCols);
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const float* ml = a.split_ml + 2 * th * a.n_splits;
  float M = -INFINITY;
  for (int s = 0; s < a.n_splits; ++s) M = fmaxf(M, ml[2 * s]);
  float L = 0;
  for (int s = 0; s < a.n_splits; ++s) L += ml[2 * s] == -INFINITY ? 0.0f : ml[2 * s + 1] * expf(ml[2 * s] - M);
  for (int64_t r = threadIdx.x; r < R; r += blockDim.x) {
    float c = 0;
    for (int s = 0; s < a.n_splits; ++s) {
      if (ml[2 * s] != -INFINITY) c += a.split_ctx[(th * a.n_splits + s) * R + r] * expf(ml[2 * s] - M);
    }
    ctx[r] = c / L;
  }
  __syncthreads();
  for (int64_t e = e_begin + warp; e < e_end; e += kWarps) {
    const float* w_uv = a.kv_b + (h * (a.Dn + a.Dv) + a.Dn + e) * R;
    float s = 0;
    for (int64_t r = lane; r < R; r += 32) s = fmaf(w_uv[r], ctx[r], s);
    s = warp_sum(s);
    if (lane == 0) a.o[t * a.H * a.Dv + h * a.Dv + e] = s;
  }
}

}  // namespace

int mla_splits(int64_t T, int64_t H, int64_t R, bool naive, int64_t max_context) {
  if (naive || R > 32 * kGroupPerLane) return 1;
  const int64_t blocks = T * ((H + kHeads - 1) / kHeads);
  const int64_t want = (2 * 132 + blocks - 1) / blocks;      // about two blocks per SM of an H100/H200
  const int64_t most = std::max<int64_t>(1, max_context / 64);  // at least 64 keys a block
  return static_cast<int>(std::min<int64_t>({want, most, 64}));
}

cudaError_t launch_mla(const MlaLaunch& a, cudaStream_t stream) {
  if (a.n_splits < 1 || (a.n_splits > 1 && (a.split_ctx == nullptr || a.split_ml == nullptr))) return cudaErrorInvalidValue;
  if (a.T == 0) return cudaSuccess;
  if (!a.naive && a.R <= 32 * kGroupPerLane) {
    if (a.q_abs == nullptr) return cudaErrorInvalidValue;
    mla_q_abs_kernel<<<static_cast<unsigned>(a.T * a.H), 256, static_cast<size_t>(a.Dn) * sizeof(float), stream>>>(a);
    const size_t shared = static_cast<size_t>(kHeads * a.R + kHeads * a.Dr + kWarps * kHeads * a.R + kWarps * kHeads * 2) *
                          sizeof(float);
    if (shared > 48 * 1024) {
      const cudaError_t e = cudaFuncSetAttribute(mla_grouped_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 static_cast<int>(shared));
      if (e != cudaSuccess) return e;
    }
    const int64_t n_groups = (a.H + kHeads - 1) / kHeads;
    const dim3 grid(static_cast<unsigned>(a.T * n_groups), static_cast<unsigned>(a.n_splits));
    mla_grouped_kernel<<<grid, 32 * kWarps, shared, stream>>>(a);
    if (a.n_splits == 1) return cudaGetLastError();
    const dim3 combine_grid(static_cast<unsigned>(a.T * a.H), blocks_for(a.Dv, kCombineCols));
    mla_combine_kernel<<<combine_grid, 32 * kWarps, static_cast<size_t>(a.R) * sizeof(float), stream>>>(a);
    return cudaGetLastError();
  }
  const int64_t acc_width = a.naive ? a.Dv : a.R;
  if (acc_width > 32 * kMaxPerLane || a.R + a.Dr + a.Dn + a.Dv > kMlaMaxWidth) return cudaErrorInvalidValue;
  const size_t shared = static_cast<size_t>(std::max(a.R, a.Dn) + a.Dr + (kWarps + 1) * acc_width + 2 * kWarps) * sizeof(float);
  mla_kernel<<<static_cast<unsigned>(a.T * a.H), 32 * kWarps, shared, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace quatre::cuda
