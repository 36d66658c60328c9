// Element-wise and row kernels of the CUDA backend: fill, weight-row dequantisation (embed, kv_b; 4-bit too), RMSNorm,
// add, column split, row gather, RoPE with the Llama-4 temperature, the latent cache write (alone, or with its
// RMSNorm and the RoPE of q and k), SiLU-gating, a matmul's input split into its three BF16 terms, and the
// random weights of --random-weights (float types and symmetric 4-bit).
// Depends on CUDA only.
#include <algorithm>

#include "backend/cuda/device_math.cuh"
#include "backend/cuda/matmul_common.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/q8.cuh"

namespace quatre::cuda {
namespace {

__global__ void fill_kernel(float* p, int64_t n, float v) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    p[i] = v;
  }
}

__global__ void quantize_fp8_kernel(const float* x, int64_t ldx, const int32_t* rows, int64_t M, int64_t K,
                                    const float* group_scale, int G, float a, uint8_t* out) {
  const int64_t pairs = M * (K / 2);  // K even (the callers: K % 16 == 0)
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < pairs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t m = i / (K / 2), k = 2 * (i % (K / 2));
    const int64_t r = rows != nullptr ? rows[m] : m;
    uint16_t q = 0;  // a padding row: FP8 zeros
    if (r >= 0) {
      const float2 v = *reinterpret_cast<const float2*>(x + r * ldx + k);
      q = act_fp8x2(v.x, v.y, group_scale != nullptr ? group_scale[m / G] : a);
    }
    *reinterpret_cast<uint16_t*>(out + m * K + k) = q;
  }
}

// h = silu(g) · u (silu_mul_kernel's arithmetic), quantised as quantize_fp8_kernel does with the row's group scale;
// g and u first times their group's scales when given (rounded products: a GEMM's alpha).
__global__ void silu_mul_quantize_fp8_kernel(const float* g, const float* u, int64_t M, int64_t K,
                                             const float* group_scale, int G, const float* g_scale,
                                             const float* u_scale, uint8_t* out) {
  const int64_t pairs = M * (K / 2);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < pairs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float2 gv = reinterpret_cast<const float2*>(g)[i], uv = reinterpret_cast<const float2*>(u)[i];
    const int64_t group = (2 * i / K) / G;
    if (g_scale != nullptr) {
      const float sg = g_scale[group], su = u_scale[group];
      gv = make_float2(__fmul_rn(gv.x, sg), __fmul_rn(gv.y, sg));
      uv = make_float2(__fmul_rn(uv.x, su), __fmul_rn(uv.y, su));
    }
    const float h0 = silu(gv.x) * uv.x, h1 = silu(gv.y) * uv.y;
    reinterpret_cast<uint16_t*>(out)[i] = act_fp8x2(h0, h1, group_scale[group]);
  }
}

// out[m, k] = act_q(x[m, k], a): the FP8 values as floats (a matmul's x_quantized input).
__global__ void quantize_act_kernel(const float* x, int64_t ldx, int64_t M, int64_t K, float a, float* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < M * K;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t m = i / K, k = i % K;
    out[i] = act_q(x[m * ldx + k], a);
  }
}

// g = silu(g) · u (silu_mul_kernel's arithmetic), then act_q with the activation scale of row m's group's expert
// (experts[group_expert[m / G]]; a padding group's rows are left as they are).
__global__ void silu_mul_act_q_kernel(float* g, const float* u, int64_t M, int64_t K, const DevWeight* experts,
                                      const int32_t* group_expert, int G) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < M * K;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t e = group_expert[(i / K) / G];
    if (e >= 0) g[i] = act_q(silu(g[i]) * u[i], experts[e].act_scale);
  }
}

__global__ void dequant_rows_kernel(DevWeight w, int64_t cols, const int32_t* ids, float* out) {
  const int64_t row = ids != nullptr ? ids[blockIdx.x] : blockIdx.x;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    out[blockIdx.x * cols + i] =
        w.type == WType::kInt4 ? int4_weight_at(w, row, i, cols) : load_weight(w.w, w.type, row * cols + i) * w.scale;
  }
}

// 1 / sqrt(mean(row[0..n)²) + eps) by the whole block (every thread calls it): each thread's strided sum, then
// an fp32 tree over the warps.
__device__ __forceinline__ float block_rms_scale(const float* row, int64_t n, float eps) {
  __shared__ float partial[32];
  float s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s = fmaf(row[i], row[i], s);
  s = warp_sum(s);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = s;
  __syncthreads();
  if (threadIdx.x < 32) {
    float t = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : 0.0f;
    t = warp_sum(t);
    if (threadIdx.x == 0) partial[0] = t;
  }
  __syncthreads();
  return 1.0f / sqrtf(partial[0] / static_cast<float>(n) + eps);
}

// One block per row: mean of squares (fp32 tree sum), then g ⊙ (x · rsqrt(ms + eps)). Rows of any width.
__global__ void rms_norm_kernel(const float* x, int64_t n, DevWeight g, float eps, float* y) {
  pdl_begin();  // the matmul after it may copy its weights meanwhile (pdl.cuh)
  const float* row = x + blockIdx.x * n;
  const float r = block_rms_scale(row, n, eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    y[blockIdx.x * n + i] = load_weight(g.w, g.type, i) * g.scale * (row[i] * r);
  }
}

// Rows of n <= 16 * threads_per_row floats (n a multiple of 4, 16-byte aligned rows): threads_per_row threads (a
// power of two >= 32) per row and blockDim / threads_per_row rows per block; each thread keeps its up to 4 float4 of
// the row in registers, so the row is read once and every load is in flight before the reduction.
constexpr int kNormQuads = 4;

__global__ void __launch_bounds__(1024) rms_norm_rows_kernel(const float* x, int64_t M, int64_t n, DevWeight g,
                                                             float eps, float* y, int threads_per_row) {
  pdl_begin();  // the matmul after it may copy its weights meanwhile (pdl.cuh)
  __shared__ float partial[32];
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32;
  const int group = tid / threads_per_row, lt = tid % threads_per_row, warps_per_row = threads_per_row / 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / threads_per_row) + group, quads = n / 4;
  const bool is_row = row < M;
  const float4* x4 = reinterpret_cast<const float4*>(x + row * n);
  float4 v[kNormQuads];
  float s = 0;
#pragma unroll
  for (int k = 0; k < kNormQuads; ++k) {
    const int64_t qd = lt + static_cast<int64_t>(k) * threads_per_row;
    v[k] = is_row && qd < quads ? x4[qd] : make_float4(0, 0, 0, 0);
    s = fmaf(v[k].x, v[k].x, fmaf(v[k].y, v[k].y, fmaf(v[k].z, v[k].z, fmaf(v[k].w, v[k].w, s))));
  }
  s = warp_sum(s);
  if (lane == 0) partial[tid / 32] = s;
  __syncthreads();
  float total = 0;
  for (int w = 0; w < warps_per_row; ++w) total += partial[group * warps_per_row + w];
  if (!is_row) return;
  const float r = 1.0f / sqrtf(total / static_cast<float>(n) + eps);
  float4* y4 = reinterpret_cast<float4*>(y + row * n);
#pragma unroll
  for (int k = 0; k < kNormQuads; ++k) {
    const int64_t qd = lt + static_cast<int64_t>(k) * threads_per_row;
    if (qd >= quads) break;
    const int64_t i = 4 * qd;
    y4[qd] = make_float4(load_weight(g.w, g.type, i) * g.scale * (v[k].x * r),
                         load_weight(g.w, g.type, i + 1) * g.scale * (v[k].y * r),
                         load_weight(g.w, g.type, i + 2) * g.scale * (v[k].z * r),
                         load_weight(g.w, g.type, i + 3) * g.scale * (v[k].w * r));
  }
}

__global__ void add_kernel(float* x, const float* y, int64_t n) {
  pdl_begin();  // a kernel launched behind it may load its weights meanwhile (pdl.cuh)
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) x[i] += y[i];
}

__global__ void split_cols_kernel(const float* x, int64_t M, int64_t n, int64_t n_left, float* left, float* right) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= M * n) return;
  const int64_t m = i / n, c = i % n;
  if (c < n_left) {
    left[m * n_left + c] = x[i];
  } else {
    right[m * (n - n_left) + c - n_left] = x[i];
  }
}

__global__ void gather_rows_kernel(const float* x, int64_t n, const int32_t* rows, float* y) {
  const float* src = x + static_cast<int64_t>(rows[blockIdx.x]) * n;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) y[blockIdx.x * n + i] = src[i];
}

__global__ void scatter_rows_kernel(const float* values, int64_t n, const int32_t* rows, float* y) {
  float* dst = y + static_cast<int64_t>(rows[blockIdx.x]) * n;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) dst[i] = values[blockIdx.x * n + i];
}

// The pair (x0, x1) rotated by the angle whose cosine and sine are c and s.
__device__ __forceinline__ float2 rotated_by(float x0, float x1, float c, float s) {
  return make_float2(x0 * c - x1 * s, x1 * c + x0 * s);
}

// The pair (x0, x1) rotated by angle.
__device__ __forceinline__ float2 rotated_pair(float x0, float x1, float angle) {
  return rotated_by(x0, x1, cosf(angle), sinf(angle));
}

// Rotates the interleaved pairs of x's rope slice (rope_dim floats) at position pos with this block's threads.
__device__ __forceinline__ void rotate_pairs(float* x, int64_t rope_dim, const float* inv_freq, int32_t pos) {
  for (int64_t p = threadIdx.x; p < rope_dim / 2; p += blockDim.x) {
    const float2 v = rotated_pair(x[2 * p], x[2 * p + 1], static_cast<float>(pos) * inv_freq[p]);
    x[2 * p] = v.x;
    x[2 * p + 1] = v.y;
  }
}

// The Llama-4 attention temperature at position pos: 1 + beta · ln(1 + floor(pos / original_max)).
__device__ __forceinline__ float llama4_temperature(int32_t pos, float beta, int64_t original_max) {
  const float ratio = static_cast<float>(pos) / static_cast<float>(original_max);
  return 1.0f + beta * logf(1.0f + floorf(ratio));
}

// Query head h of token t: its rope slice rotated, then the whole head times the Llama-4 temperature (beta != 0).
__device__ __forceinline__ void rope_query_head(float* q, int64_t t, int64_t h, int64_t n_heads, int64_t nope,
                                                int64_t rope_dim, const float* inv_freq, int32_t pos, float beta,
                                                int64_t original_max) {
  const int64_t head_dim = nope + rope_dim;
  float* head = q + (t * n_heads + h) * head_dim;
  rotate_pairs(head + nope, rope_dim, inv_freq, pos);
  if (beta == 0.0f) return;
  __syncthreads();
  const float temperature = llama4_temperature(pos, beta, original_max);
  for (int64_t i = threadIdx.x; i < head_dim; i += blockDim.x) head[i] *= temperature;
}

// Every query head of token t as rope_query_head, the rope slice's angles computed once (the same cosines and sines:
// the same bits); for prompts, where a block a head would compute them Hq times over.
__device__ __forceinline__ void rope_query_heads(float* q, int64_t t, int64_t n_heads, int64_t nope, int64_t rope_dim,
                                                 const float* inv_freq, int32_t pos, float beta, int64_t original_max) {
  constexpr int kMaxPairs = 64;  // rope_dim <= 128 (launch_rope_kv_write)
  __shared__ float cs[kMaxPairs], sn[kMaxPairs];
  const int pairs = static_cast<int>(rope_dim / 2), head_dim = static_cast<int>(nope + rope_dim);
  for (int p = static_cast<int>(threadIdx.x); p < pairs; p += static_cast<int>(blockDim.x)) {
    const float angle = static_cast<float>(pos) * inv_freq[p];
    cs[p] = cosf(angle), sn[p] = sinf(angle);
  }
  __syncthreads();
  float* row = q + t * n_heads * head_dim;
  for (int i = static_cast<int>(threadIdx.x); i < n_heads * pairs; i += static_cast<int>(blockDim.x)) {
    const int h = i / pairs, p = i % pairs;
    float* x = row + h * head_dim + nope + 2 * p;
    const float2 v = rotated_by(x[0], x[1], cs[p], sn[p]);
    x[0] = v.x;
    x[1] = v.y;
  }
  if (beta == 0.0f) return;
  __syncthreads();
  const float temperature = llama4_temperature(pos, beta, original_max);
  for (int i = static_cast<int>(threadIdx.x); i < n_heads * head_dim; i += static_cast<int>(blockDim.x)) row[i] *= temperature;
}

// Grid (T, Hq + Hk): block h < Hq rotates query head h, the last (Hk = 1) the token's k_rope; Hq = 0 without q,
// Hk = 0 without k_rope. (One block a token looping over every head took 8.7 us at T = 1 on an H100.)
__global__ void rope_kernel(float* q, float* k_rope, int64_t n_heads, int64_t nope, int64_t rope_dim,
                            const float* inv_freq, const int32_t* positions, float beta, int64_t original_max) {
  const int64_t t = blockIdx.x, h = blockIdx.y;
  if (q != nullptr && h < n_heads) {
    rope_query_head(q, t, h, n_heads, nope, rope_dim, inv_freq, positions[t], beta, original_max);
  } else {
    rotate_pairs(k_rope + t * rope_dim, rope_dim, inv_freq, positions[t]);
  }
}

// Element `at` of the cache in its dtype: BF16 rounded to nearest even, FP8 E4M3 saturated (as the CPU backend).
__device__ __forceinline__ void store_cache(void* cache, WType type, int64_t at, float v) {
  switch (type) {
    case WType::kF32: static_cast<float*>(cache)[at] = v; break;
    case WType::kBF16: static_cast<__nv_bfloat16*>(cache)[at] = __float2bfloat16(v); break;
    case WType::kF16: static_cast<__half*>(cache)[at] = __float2half(v); break;
    case WType::kF8E4M3:
      static_cast<uint8_t*>(cache)[at] = static_cast<uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
      break;
    case WType::kInt4: break;  // not a cache dtype
  }
}

__global__ void kv_write_kernel(void* cache, WType type, int64_t width, const float* c_kv, int64_t R,
                                const float* k_rope, int64_t Dr, const int64_t* slots) {
  const int64_t t = blockIdx.x;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
    store_cache(cache, type, slots[t] * width + i, i < R ? c_kv[t * R + i] : k_rope[t * Dr + i - R]);
  }
}

// Grid (T, 1 + Hq): block (t, 0) stores token t's cache entry, c = kv_a[t, :R] through RMSNorm (weight g; the
// sum of squares in rms_norm_kernel's order, not rms_norm_rows_kernel's: c may differ in its last bit from the
// composed ops') and k = kv_a[t, R:] rotated at its position, at slot slots[t]; block
// (t, 1 + h) ropes query head h as rope_kernel (Hq = 0 without q). What split_cols, rms_norm, rope and kv_write
// compute in four launches.
__global__ void rope_kv_write_kernel(float* q, int64_t n_heads, int64_t nope, void* cache, WType type,
                                     const float* kv_a, int64_t R, int64_t Dr, DevWeight g, float eps,
                                     const float* inv_freq, const int32_t* positions, float beta, int64_t original_max,
                                     const int64_t* slots) {
  pdl_begin();  // the q_abs after it may load its weights meanwhile (pdl.cuh)
  const int64_t t = blockIdx.x;
  const int32_t pos = positions[t];
  if (blockIdx.y > 0 && gridDim.y == 2 && q != nullptr) {  // a prompt: every query head of the token in one block
    rope_query_heads(q, t, n_heads, nope, Dr, inv_freq, pos, beta, original_max);
    return;
  }
  if (blockIdx.y > 0) {
    rope_query_head(q, t, blockIdx.y - 1, n_heads, nope, Dr, inv_freq, pos, beta, original_max);
    return;
  }
  const int64_t width = R + Dr, at = slots[t] * width;
  const float* row = kv_a + t * width;
  const float r = block_rms_scale(row, R, eps);
  for (int64_t i = threadIdx.x; i < R; i += blockDim.x) {
    store_cache(cache, type, at + i, load_weight(g.w, g.type, i) * g.scale * (row[i] * r));
  }
  for (int64_t p = threadIdx.x; p < Dr / 2; p += blockDim.x) {
    const float2 k = rotated_pair(row[R + 2 * p], row[R + 2 * p + 1], static_cast<float>(pos) * inv_freq[p]);
    store_cache(cache, type, at + R + 2 * p, k.x);
    store_cache(cache, type, at + R + 2 * p + 1, k.y);
  }
}

__global__ void silu_mul_kernel(float* g, const float* u, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) g[i] = silu(g[i]) * u[i];
}

// out[m, k] = bf16(x[rows[m], k]) (zeros for a padding row, rows[m] < 0; rows null: m), 4 values a thread.
__global__ void bf16_rows_kernel(const float* x, int64_t ldx, const int32_t* rows, int64_t M, int64_t K,
                                 uint16_t* out) {
  const int64_t quads = K / 4;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < M * quads;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t m = i / quads, k = 4 * (i % quads);
    const int64_t r = rows != nullptr ? rows[m] : m;
    uint2 b = make_uint2(0, 0);
    if (r >= 0) {
      const float4 v = *reinterpret_cast<const float4*>(x + r * ldx + k);
      b = make_uint2(pack_bf16x2(v.x, v.y), pack_bf16x2(v.z, v.w));
    }
    *reinterpret_cast<uint2*>(out + m * K + k) = b;
  }
}

// out[m, k] = bf16(silu(g) · u) (silu_mul_kernel's arithmetic; g, u [M, K]).
__global__ void silu_mul_bf16_kernel(const float* g, const float* u, int64_t M, int64_t K, uint16_t* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < M * K / 4;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float4 a = reinterpret_cast<const float4*>(g)[i], b = reinterpret_cast<const float4*>(u)[i];
    reinterpret_cast<uint2*>(out)[i] = make_uint2(pack_bf16x2(silu(a.x) * b.x, silu(a.y) * b.y),
                                                  pack_bf16x2(silu(a.z) * b.z, silu(a.w) * b.w));
  }
}

// Expert ids[i]'s gate, up and down (table [3][E]: gate [F, D], up [F, D], down [D, F], 4-bit) as BF16 into
// out + (3i + j)·F·D: bf16 of core/int4.h's fp32 value (decode_int4_word), 32 codes (one 16-byte load, one group)
// a thread. grid.y: 3 · n matrices.
template <bool kSymmetric>
__global__ void dequant_int4_bf16_kernel(const DevWeight* table, int64_t E, const int32_t* ids, int64_t F, int64_t D,
                                         uint16_t* out) {
  const int64_t mat = blockIdx.y, i = mat / 3, j = mat % 3;
  const DevWeight w = table[j * E + ids[i]];
  const int64_t cols = j < 2 ? D : F, pieces = F * D / 32, n_groups = cols / w.group_size;
  uint16_t* o = out + mat * F * D;
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < pieces;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = (32 * q) / cols, col = (32 * q) % cols, group = row * n_groups + col / w.group_size;
    const uint4 codes = __ldg(reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(w.w) + 16 * q));
    const float s = bf16_bits_to_f32(w.int4_scales[group]);
    const float m = kSymmetric ? 0.0f : bf16_bits_to_f32(w.int4_offsets[group]);
    uint32_t packed[16];
#pragma unroll
    for (int word_i = 0; word_i < 4; ++word_i) {
      float4 lo, hi;
      decode_int4_word<kSymmetric>(word(codes, word_i), s, m, lo, hi);
      if constexpr (kSymmetric) {  // c - 8: times s, exact in fp32 (core/int4.h)
        lo = make_float4(lo.x * s, lo.y * s, lo.z * s, lo.w * s);
        hi = make_float4(hi.x * s, hi.y * s, hi.z * s, hi.w * s);
      }
      packed[4 * word_i] = pack_bf16x2(lo.x, lo.y), packed[4 * word_i + 1] = pack_bf16x2(lo.z, lo.w);
      packed[4 * word_i + 2] = pack_bf16x2(hi.x, hi.y), packed[4 * word_i + 3] = pack_bf16x2(hi.z, hi.w);
    }
    uint4* dst = reinterpret_cast<uint4*>(o + 32 * q);
#pragma unroll
    for (int v = 0; v < 4; ++v) {
      dst[v] = make_uint4(packed[4 * v], packed[4 * v + 1], packed[4 * v + 2], packed[4 * v + 3]);
    }
  }
}

// The N terms of x[k .. k+8) (lo: k .. k+4, hi: k+4 .. k+8) at `at` (plane t at at + t·K), each plane's octet in the
// order of the 4-bit small tensor-core kernel's slots: k {0, 4, 1, 5, 2, 6, 3, 7} (matmul_small_tc.cu int4_pairs).
template <int N>
__device__ __forceinline__ void store_terms8(const float4& lo, const float4& hi, uint16_t* at, int64_t K) {
  uint32_t p[4][N];  // [pair]: (0, 4), (1, 5), (2, 6), (3, 7)
  split_bf16<N>(lo.x, hi.x, p[0]);
  split_bf16<N>(lo.y, hi.y, p[1]);
  split_bf16<N>(lo.z, hi.z, p[2]);
  split_bf16<N>(lo.w, hi.w, p[3]);
#pragma unroll
  for (int t = 0; t < N; ++t) *reinterpret_cast<uint4*>(at + t * K) = make_uint4(p[0][t], p[1][t], p[2][t], p[3][t]);
}

template <int N>
__global__ void split_terms_kernel(const float* x, int64_t ldx, int64_t M, int64_t K, uint16_t* out) {
  const int64_t octets = K / 8;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < M * octets;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t m = i / octets, k = 8 * (i % octets);
    const float4* from = reinterpret_cast<const float4*>(x + m * ldx + k);
    store_terms8<N>(from[0], from[1], out + N * K * m + k, K);
  }
}

// silu(g) · u, four at a time, as silu_mul_kernel computes it: rounded products (no contraction into what follows).
__device__ __forceinline__ float4 silu_mul4(float4 g, float4 u) {
  return make_float4(__fmul_rn(silu(g.x), u.x), __fmul_rn(silu(g.y), u.y), __fmul_rn(silu(g.z), u.z),
                     __fmul_rn(silu(g.w), u.w));
}

// g = silu(g) · u as silu_mul_kernel computes it, and its terms.
template <int N>
__global__ void silu_mul_terms_kernel(float* g, const float* u, int64_t M, int64_t K, uint16_t* out) {
  const int64_t octets = K / 8;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < M * octets;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t m = i / octets, k = 8 * (i % octets);
    float4 v[2];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int64_t at = (m * K + k) / 4 + j;
      v[j] = silu_mul4(reinterpret_cast<const float4*>(g)[at], reinterpret_cast<const float4*>(u)[at]);
      reinterpret_cast<float4*>(g)[at] = v[j];
    }
    store_terms8<N>(v[0], v[1], out + N * K * m + k, K);
  }
}

// A warp's kQ8Block values of row m (4 a lane: k = 4·lane .. + 3 of the block at `k0`) quantised by core/int4.h's
// round_q8_blocks rule into out (the row's bytes, each octet of k in the order {0, 2, 4, 6, 1, 3, 5, 7}: lane 2o holds
// k 0-3 of octet o, lane 2o + 1 k 4-7) and meta (d, Σ q).
static_assert(kQ8Block == 4 * 32, "a q8 block: four values a lane of a warp");
__device__ __forceinline__ void store_q8_block(float4 v, int64_t m, int64_t K, int64_t k0, uint8_t* out, float* meta) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  float amax = max_nan(max_nan(fabsf(v.x), fabsf(v.y)), max_nan(fabsf(v.z), fabsf(v.w)));
#pragma unroll
  for (int d = 16; d >= 1; d /= 2) amax = max_nan(amax, __shfl_xor_sync(0xffffffffu, amax, d));
  const float inv = q8_inverse_step(amax);
  const uint32_t q0 = q8_code_bits(v.x, inv), q1 = q8_code_bits(v.y, inv), q2 = q8_code_bits(v.z, inv);
  const uint32_t q3 = q8_code_bits(v.w, inv);
  const uint32_t even = __byte_perm(q0, q2, 0x0040), odd = __byte_perm(q1, q3, 0x0040);  // bytes (k0, k2), (k1, k3)
  int sum = __dp4a(static_cast<int>(__byte_perm(even, odd, 0x5410)), 0x01010101, 0);
#pragma unroll
  for (int d = 16; d >= 1; d /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, d);
  const uint32_t even_hi = __shfl_down_sync(0xffffffffu, even, 1), odd_hi = __shfl_down_sync(0xffffffffu, odd, 1);
  if (lane % 2 == 0) {
    *reinterpret_cast<uint2*>(out + m * K + k0 + 4 * lane) =
        make_uint2(__byte_perm(even, even_hi, 0x5410), __byte_perm(odd, odd_hi, 0x5410));
  }
  if (lane == 0) {
    *reinterpret_cast<float2*>(meta + 2 * (m * (K / kQ8Block) + k0 / kQ8Block)) =
        make_float2(q8_step(amax), static_cast<float>(sum));
  }
}

// x [M, K] (rows ldx apart) quantised, one warp a (row, block of kQ8Block k), grid-stride over them; kGated: x
// (= gated) becomes silu(x) · u first, stored into gated (u and gated rows ldx apart too). x_rows (not kGated): row
// m of out from x's row x_rows[m], zeros for a negative one.
template <bool kGated>
__global__ void quantize_q8_kernel(const float* x, const float* u, float* gated, int64_t ldx, int64_t M, int64_t K,
                                   uint8_t* out, float* meta, const int32_t* x_rows) {
  const int64_t blocks = K / kQ8Block, warps = static_cast<int64_t>(gridDim.x) * blockDim.x / 32;
  for (int64_t w = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; w < M * blocks; w += warps) {
    const int64_t m = w / blocks, k0 = kQ8Block * (w % blocks);
    const int64_t row = x_rows != nullptr ? x_rows[m] : m;
    const int64_t at = (row * ldx + k0) / 4 + threadIdx.x % 32;  // float4s: ldx % 4 == 0
    float4 v = row >= 0 ? reinterpret_cast<const float4*>(x)[at] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if constexpr (kGated) {
      v = silu_mul4(v, reinterpret_cast<const float4*>(u)[at]);
      reinterpret_cast<float4*>(gated)[at] = v;
    }
    store_q8_block(v, m, K, k0, out, meta);
  }
}

// launch_quantize_q8 (gated null) and launch_silu_mul_q8 (gated = x, u the up products; no x_rows).
cudaError_t launch_q8(const float* x, const float* u, float* gated, int64_t ldx, int64_t M, int64_t K, uint8_t* out,
                      float* meta, cudaStream_t stream, const int32_t* x_rows = nullptr) {
  if (M == 0 || K == 0) return cudaSuccess;
  const auto misaligned = [](const void* p, uintptr_t to) { return reinterpret_cast<uintptr_t>(p) % to != 0; };
  if (K % kQ8Block != 0 || ldx % 4 != 0 || misaligned(x, 16) || misaligned(u, 16) || misaligned(out, 8) ||
      misaligned(meta, 8)) {
    return cudaErrorInvalidValue;
  }
  const unsigned blocks = std::min<unsigned>(blocks_for(M * K / kQ8Block, 8), 132u * 16u);  // 8 warps a block
  if (gated != nullptr) {
    quantize_q8_kernel<true><<<blocks, 256, 0, stream>>>(x, u, gated, ldx, M, K, out, meta, nullptr);
  } else {
    quantize_q8_kernel<false><<<blocks, 256, 0, stream>>>(x, nullptr, nullptr, ldx, M, K, out, meta, x_rows);
  }
  return cudaGetLastError();
}

__device__ __forceinline__ uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

__global__ void init_weight_kernel(void* w, WType t, int64_t n, float std, float value, float scale, uint64_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = value;
    if (std != 0.0f) {
      const float u = static_cast<float>(splitmix64(seed * 0x100000001B3ull ^ static_cast<uint64_t>(i)) >> 40) *
                      (1.0f / 16777216.0f);  // [0, 1)
      v = (2.0f * u - 1.0f) * 1.7320508f * std;
    }
    v /= scale;
    switch (t) {
      case WType::kF32: static_cast<float*>(w)[i] = v; break;
      case WType::kBF16: static_cast<__nv_bfloat16*>(w)[i] = __float2bfloat16(v); break;
      case WType::kF16: static_cast<__half*>(w)[i] = __float2half(v); break;
      case WType::kF8E4M3:
        static_cast<uint8_t*>(w)[i] = static_cast<uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
        break;
      case WType::kInt4: break;  // launch_init_int4_weight
    }
  }
}

// Codes uniform in 1..15 (c - 8 in -7..7: mean 0), two a byte, from a counter hash of (seed, byte); every scale s.
__global__ void init_int4_kernel(uint8_t* codes, int64_t n_bytes, uint16_t* scales, int64_t n_groups, uint16_t s,
                                 uint64_t seed) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n_bytes; i += stride) {
    const uint64_t h = splitmix64(seed * 0x100000001B3ull ^ static_cast<uint64_t>(i));
    const auto lo = static_cast<uint32_t>((h >> 32) % 15) + 1, hi = static_cast<uint32_t>((h & 0xFFFFFFFFu) % 15) + 1;
    codes[i] = static_cast<uint8_t>(lo | (hi << 4));
  }
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n_groups; i += stride) scales[i] = s;
}

}  // namespace

cudaError_t launch_init_weight(void* w, WType t, int64_t n, float std, float value, float scale, uint64_t seed,
                               cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  init_weight_kernel<<<std::min<unsigned>(blocks_for(n, 256), 16384u), 256, 0, stream>>>(w, t, n, std, value, scale,
                                                                                        seed);
  return cudaGetLastError();
}

cudaError_t launch_init_int4_weight(uint8_t* codes, int64_t n_code_bytes, uint16_t* scales, int64_t n_groups,
                                    float scale, uint64_t seed, cudaStream_t stream) {
  if (n_code_bytes == 0) return cudaSuccess;
  const __nv_bfloat16 s = __float2bfloat16(scale);
  init_int4_kernel<<<std::min<unsigned>(blocks_for(n_code_bytes, 256), 16384u), 256, 0, stream>>>(
      codes, n_code_bytes, scales, n_groups, *reinterpret_cast<const uint16_t*>(&s), seed);
  return cudaGetLastError();
}

cudaError_t launch_fill(float* p, int64_t n, float value, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  fill_kernel<<<std::min<unsigned>(blocks_for(n, 256), 65535u), 256, 0, stream>>>(p, n, value);
  return cudaGetLastError();
}

cudaError_t launch_quantize_fp8_rows(const float* x, int64_t ldx, const int32_t* rows, int64_t M, int64_t K,
                                     const float* group_scale, int G, float a, uint8_t* out, cudaStream_t stream) {
  if (M == 0 || K == 0) return cudaSuccess;
  if (K % 2 != 0 || ldx % 2 != 0 || reinterpret_cast<uintptr_t>(x) % 8 != 0 || (group_scale != nullptr && G <= 0)) {
    return cudaErrorInvalidValue;
  }
  quantize_fp8_kernel<<<std::min<unsigned>(blocks_for(M * K / 2, 256), 132u * 16u), 256, 0, stream>>>(
      x, ldx, rows, M, K, group_scale, G, a, out);
  return cudaGetLastError();
}

cudaError_t launch_silu_mul_quantize_fp8(const float* g, const float* u, int64_t M, int64_t K,
                                         const float* group_scale, int G, uint8_t* out, cudaStream_t stream,
                                         const float* g_scale, const float* u_scale) {
  if (M == 0 || K == 0) return cudaSuccess;
  if (K % 2 != 0 || G <= 0 || group_scale == nullptr || reinterpret_cast<uintptr_t>(g) % 8 != 0 ||
      reinterpret_cast<uintptr_t>(u) % 8 != 0 || (g_scale == nullptr) != (u_scale == nullptr)) {
    return cudaErrorInvalidValue;
  }
  silu_mul_quantize_fp8_kernel<<<std::min<unsigned>(blocks_for(M * K / 2, 256), 132u * 16u), 256, 0, stream>>>(
      g, u, M, K, group_scale, G, g_scale, u_scale, out);
  return cudaGetLastError();
}

cudaError_t launch_split_terms(const float* x, int64_t ldx, int64_t M, int64_t K, uint16_t* out, int planes,
                               cudaStream_t stream) {
  if (M == 0 || K == 0) return cudaSuccess;
  if (K % 8 != 0 || ldx % 4 != 0 || reinterpret_cast<uintptr_t>(x) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(out) % 16 != 0 || (planes != 1 && planes != 3)) {
    return cudaErrorInvalidValue;
  }
  const unsigned blocks = std::min<unsigned>(blocks_for(M * K / 8, 256), 132u * 16u);
  if (planes == 1) {
    split_terms_kernel<1><<<blocks, 256, 0, stream>>>(x, ldx, M, K, out);
  } else {
    split_terms_kernel<3><<<blocks, 256, 0, stream>>>(x, ldx, M, K, out);
  }
  return cudaGetLastError();
}

cudaError_t launch_silu_mul_terms(float* g, const float* u, int64_t M, int64_t K, uint16_t* out, int planes,
                                  cudaStream_t stream) {
  if (M == 0 || K == 0) return cudaSuccess;
  if (K % 8 != 0 || reinterpret_cast<uintptr_t>(g) % 16 != 0 || reinterpret_cast<uintptr_t>(u) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(out) % 16 != 0 || (planes != 1 && planes != 3)) {
    return cudaErrorInvalidValue;
  }
  const unsigned blocks = std::min<unsigned>(blocks_for(M * K / 8, 256), 132u * 16u);
  if (planes == 1) {
    silu_mul_terms_kernel<1><<<blocks, 256, 0, stream>>>(g, u, M, K, out);
  } else {
    silu_mul_terms_kernel<3><<<blocks, 256, 0, stream>>>(g, u, M, K, out);
  }
  return cudaGetLastError();
}

cudaError_t launch_quantize_q8(const float* x, int64_t ldx, int64_t M, int64_t K, uint8_t* out, float* meta,
                               cudaStream_t stream, const int32_t* x_rows) {
  return launch_q8(x, nullptr, nullptr, ldx, M, K, out, meta, stream, x_rows);
}

cudaError_t launch_silu_mul_q8(float* g, const float* u, int64_t M, int64_t K, uint8_t* out, float* meta,
                               cudaStream_t stream) {
  if (g == nullptr || u == nullptr) return cudaErrorInvalidValue;
  return launch_q8(g, u, g, K, M, K, out, meta, stream);
}

cudaError_t launch_bf16_rows(const float* x, int64_t ldx, const int32_t* rows, int64_t M, int64_t K, uint16_t* out,
                             cudaStream_t stream) {
  if (M == 0 || K == 0) return cudaSuccess;
  if (K % 4 != 0 || ldx % 4 != 0 || reinterpret_cast<uintptr_t>(x) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(out) % 8 != 0) {
    return cudaErrorInvalidValue;
  }
  const unsigned blocks = std::min<unsigned>(blocks_for(M * K / 4, 256), 132u * 16u);
  bf16_rows_kernel<<<blocks, 256, 0, stream>>>(x, ldx, rows, M, K, out);
  return cudaGetLastError();
}

cudaError_t launch_silu_mul_bf16(const float* g, const float* u, int64_t M, int64_t K, uint16_t* out,
                                 cudaStream_t stream) {
  if (M == 0 || K == 0) return cudaSuccess;
  if (K % 4 != 0 || reinterpret_cast<uintptr_t>(g) % 16 != 0 || reinterpret_cast<uintptr_t>(u) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(out) % 8 != 0) {
    return cudaErrorInvalidValue;
  }
  silu_mul_bf16_kernel<<<std::min<unsigned>(blocks_for(M * K / 4, 256), 132u * 16u), 256, 0, stream>>>(g, u, M, K, out);
  return cudaGetLastError();
}

cudaError_t launch_dequant_int4_bf16(const DevWeight* table, int64_t E, const int32_t* ids, int n, bool is_symmetric,
                                     int64_t F, int64_t D, uint16_t* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if ((F * D) % 32 != 0 || D % 32 != 0 || F % 32 != 0 || n > 65535 / 3 || reinterpret_cast<uintptr_t>(out) % 16 != 0) {
    return cudaErrorInvalidValue;
  }
  const dim3 grid(std::min<unsigned>(blocks_for(F * D / 32, 256), 64u), static_cast<unsigned>(3 * n));
  is_symmetric ? dequant_int4_bf16_kernel<true><<<grid, 256, 0, stream>>>(table, E, ids, F, D, out)
               : dequant_int4_bf16_kernel<false><<<grid, 256, 0, stream>>>(table, E, ids, F, D, out);
  return cudaGetLastError();
}

cudaError_t launch_quantize_fp8(const float* x, int64_t ldx, int64_t M, int64_t K, float a, uint8_t* out,
                                cudaStream_t stream) {
  return launch_quantize_fp8_rows(x, ldx, nullptr, M, K, nullptr, 0, a, out, stream);
}

cudaError_t launch_dequant_rows(const DevWeight& w, int64_t cols, const int32_t* ids, int64_t n_ids, float* out,
                                cudaStream_t stream) {
  if (n_ids == 0) return cudaSuccess;
  dequant_rows_kernel<<<static_cast<unsigned>(n_ids), 256, 0, stream>>>(w, cols, ids, out);
  return cudaGetLastError();
}

cudaError_t launch_rms_norm(const float* x, int64_t M, int64_t n, const DevWeight& g, float eps, float* y,
                            cudaStream_t stream) {
  if (M == 0) return cudaSuccess;
  const bool is_aligned =
      n % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0;
  if (is_aligned && n <= 4 * kNormQuads * 1024) {
    int threads_per_row = 32;
    while (threads_per_row * 4 * kNormQuads < n) threads_per_row *= 2;
    const int threads = std::max(threads_per_row, 256), rows_per_block = threads / threads_per_row;
    const auto blocks = static_cast<unsigned>((M + rows_per_block - 1) / rows_per_block);
    rms_norm_rows_kernel<<<blocks, threads, 0, stream>>>(x, M, n, g, eps, y, threads_per_row);
    return cudaGetLastError();
  }
  rms_norm_kernel<<<static_cast<unsigned>(M), 256, 0, stream>>>(x, n, g, eps, y);
  return cudaGetLastError();
}

cudaError_t launch_add(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  add_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(x, y, n);
  return cudaGetLastError();
}

cudaError_t launch_split_cols(const float* x, int64_t M, int64_t n, int64_t n_left, float* left, float* right,
                              cudaStream_t stream) {
  if (M * n == 0) return cudaSuccess;
  split_cols_kernel<<<blocks_for(M * n, 256), 256, 0, stream>>>(x, M, n, n_left, left, right);
  return cudaGetLastError();
}

cudaError_t launch_gather_rows(const float* x, int64_t n, const int32_t* rows, int64_t n_rows, float* y,
                               cudaStream_t stream) {
  if (n_rows == 0) return cudaSuccess;
  gather_rows_kernel<<<static_cast<unsigned>(n_rows), 256, 0, stream>>>(x, n, rows, y);
  return cudaGetLastError();
}

cudaError_t launch_scatter_rows(const float* values, int64_t n, const int32_t* rows, int64_t n_rows, float* y,
                                cudaStream_t stream) {
  if (n_rows == 0) return cudaSuccess;
  scatter_rows_kernel<<<static_cast<unsigned>(n_rows), 256, 0, stream>>>(values, n, rows, y);
  return cudaGetLastError();
}

cudaError_t launch_rope(float* q, float* k_rope, int64_t T, int64_t n_heads, int64_t nope, int64_t rope_dim,
                        const float* inv_freq, const int32_t* positions, float beta, int64_t original_max,
                        cudaStream_t stream) {
  const int64_t heads = (q != nullptr ? n_heads : 0) + (k_rope != nullptr ? 1 : 0);
  if (T == 0 || heads == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(T), static_cast<unsigned>(heads));
  rope_kernel<<<grid, 64, 0, stream>>>(q, k_rope, n_heads, nope, rope_dim, inv_freq, positions, beta, original_max);
  return cudaGetLastError();
}

cudaError_t launch_kv_write(void* cache, WType cache_type, int64_t width, const float* c_kv, int64_t R,
                            const float* k_rope, int64_t Dr, const int64_t* slots, int64_t T, cudaStream_t stream) {
  if (T == 0) return cudaSuccess;
  kv_write_kernel<<<static_cast<unsigned>(T), 256, 0, stream>>>(cache, cache_type, width, c_kv, R, k_rope, Dr, slots);
  return cudaGetLastError();
}

constexpr int64_t kRopePerTokenMin = 64;  // tokens from which a block ropes all of a token's query heads

cudaError_t launch_rope_kv_write(const RopeKvWriteLaunch& l, cudaStream_t stream) {
  if (l.T == 0) return cudaSuccess;
  // Decode: a block a query head (short steps: latency); prompts: a block for all of a token's heads.
  const bool per_token = l.q != nullptr && l.T >= kRopePerTokenMin && l.Dr <= 128;
  const dim3 grid(static_cast<unsigned>(l.T), static_cast<unsigned>(per_token ? 2 : 1 + (l.q != nullptr ? l.n_heads : 0)));
  rope_kv_write_kernel<<<grid, 256, 0, stream>>>(l.q, l.n_heads, l.nope, l.cache, l.cache_type, l.kv_a, l.R, l.Dr,
                                                 l.norm, l.eps, l.inv_freq, l.positions, l.llama4_beta,
                                                 l.llama4_original_max, l.slots);
  return cudaGetLastError();
}

cudaError_t launch_quantize_act(const float* x, int64_t ldx, int64_t M, int64_t K, float a, float* out,
                                cudaStream_t stream) {
  if (M * K == 0) return cudaSuccess;
  if (a <= 0.0f) return cudaErrorInvalidValue;
  quantize_act_kernel<<<std::min<unsigned>(blocks_for(M * K, 256), 1024u), 256, 0, stream>>>(x, ldx, M, K, a, out);
  return cudaGetLastError();
}

cudaError_t launch_silu_mul_act_q(float* g, const float* u, int64_t M, int64_t K, const DevWeight* experts,
                                  const int32_t* group_expert, int G, cudaStream_t stream) {
  if (M * K == 0) return cudaSuccess;
  if (G <= 0) return cudaErrorInvalidValue;
  silu_mul_act_q_kernel<<<std::min<unsigned>(blocks_for(M * K, 256), 1024u), 256, 0, stream>>>(g, u, M, K, experts,
                                                                                            group_expert, G);
  return cudaGetLastError();
}

cudaError_t launch_silu_mul(float* g, const float* u, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  silu_mul_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(g, u, n);
  return cudaGetLastError();
}

}  // namespace quatre::cuda
