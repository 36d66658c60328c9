// The Pixtral vision tower's kernels (core/backend.h's rope_2d, segment_attention, gelu), all in fp32:
//   rope_2d: a thread a (row, head, pair), its angle's cos and sin, q's and k's pair rotated;
//   segment_attention: flash-style, a block a (tile of 64 query rows of one segment, head); the segment's keys in
//     tiles of 64 through shared memory; S = Q·Kᵀ and O += P·V on 4x4 register micro-tiles of 16x16 threads; the
//     online softmax per row (running max and sum, expf); never an N x N matrix;
//   gelu: the exact (erf) GELU, element-wise.
// Products and sums that the CPU rounds one by one are written with __fmul_rn / __fadd_rn (no FMA contraction).
// Depends on CUDA only.
#include <algorithm>
#include <cmath>

#include "backend/cuda/device_math.cuh"
#include "backend/cuda/kernels.h"

namespace quatre::cuda {
namespace {

// In every head of q and k: pair j turns by float(rows[t]) · freq[2j] (j < dh/4) or float(cols[t]) ·
// freq[2(j - dh/4) + 1]; the pair is columns (2j, 2j+1), or (j, j + dh/2) when half_pairs.
__global__ void rope_2d_kernel(float* q, float* k, int64_t N, int64_t H, int64_t dh, const float* freq,
                               const int32_t* rows, const int32_t* cols, bool half_pairs) {
  const int64_t half = dh / 2, quarter = dh / 4, n = N * H * half;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = i % half, head = i / half, t = head / H;  // head: t·H + h, whose columns start at head·dh
    const float angle = j < quarter ? __fmul_rn(static_cast<float>(rows[t]), freq[2 * j])
                                    : __fmul_rn(static_cast<float>(cols[t]), freq[2 * (j - quarter) + 1]);
    const float c = cosf(angle), s = sinf(angle);
    const int64_t a = head * dh + (half_pairs ? j : 2 * j), b = head * dh + (half_pairs ? j + half : 2 * j + 1);
    const auto turn = [&](float* x) {
      const float x0 = x[a], x1 = x[b];
      x[a] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
      x[b] = __fadd_rn(__fmul_rn(x1, c), __fmul_rn(x0, s));
    };
    turn(q);
    turn(k);
  }
}

__global__ void gelu_kernel(float* x, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = x[i];
    x[i] = __fmul_rn(__fmul_rn(0.5f, v), __fadd_rn(1.0f, erff(__fmul_rn(v, 0.70710678118654752f))));
  }
}

constexpr int kRows = kSegmentAttentionRows;  // query rows a block
constexpr int kKeys = 64;                     // keys a tile
constexpr int kThreads = 256;                 // 16 row groups (ty) x 16 key or column groups (tx)
constexpr int kPad = 4;                       // floats after each shared row: K reads of 8 lanes in distinct banks
static_assert(kKeys == kRows, "load_tile stages 64-row tiles of queries, keys and values alike");

// Shared bytes of the kernel for heads padded to DP columns: Q, K, V tiles [64][DP + kPad] and P [64][64 + kPad].
constexpr size_t segment_shared_bytes(int DP) {
  return (static_cast<size_t>(kRows + 2 * kKeys) * (DP + kPad) + static_cast<size_t>(kRows) * (kKeys + kPad)) *
         sizeof(float);
}

// dst[r][c] = src[row0 + r, col0 + c] for r < n_rows, c < dh; zeros elsewhere in the 64 x DP tile (padded rows and
// columns add nothing to the scores or the output, and stay finite). A thread keeps one column (DP divides kThreads)
// and steps down the rows kThreads / DP at a time.
template <int DP>
__device__ __forceinline__ void load_tile(float* dst, const float* src, int64_t row0, int n_rows, int64_t width,
                                          int64_t col0, int dh) {
  constexpr int kStep = kThreads / DP;
  const int r0 = static_cast<int>(threadIdx.x) / DP, c = static_cast<int>(threadIdx.x) % DP;
  const float* from = src + (row0 + r0) * width + col0 + c;
#pragma unroll
  for (int it = 0; it < kRows / kStep; ++it) {
    const int r = r0 + it * kStep;
    dst[r * (DP + kPad) + c] = r < n_rows && c < dh ? from[it * kStep * width] : 0.0f;
  }
}

// VW consecutive floats of shared memory (p aligned to VW floats).
template <int VW>
__device__ __forceinline__ void load_vec(const float* p, float (&out)[VW]) {
  if constexpr (VW == 4) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    out[0] = v.x, out[1] = v.y, out[2] = v.z, out[3] = v.w;
  } else if constexpr (VW == 2) {
    const float2 v = *reinterpret_cast<const float2*>(p);
    out[0] = v.x, out[1] = v.y;
  } else {
    out[0] = p[0];
  }
}

// The max (or sum) over the 16 lanes of a row group (tx: the lane's low four bits).
__device__ __forceinline__ float row_max(float v) {
#pragma unroll
  for (int o = 1; o < 16; o *= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float row_sum(float v) {
#pragma unroll
  for (int o = 1; o < 16; o *= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Block (tile, head): tile = tiles[4·blockIdx.x ..] = (q0, q1, k0, k1), query rows [q0, q1) of the segment [k0, k1).
// Thread (ty, tx) holds rows ty + 16i (i < 4): their scores against keys tx + 16j (j < 4) of a tile, and their output
// columns (16m + tx)·VW + w (m < NV, w < VW): C = DP/16 columns in vectors of VW. Its share of each row's sum l stays
// partial until the end (every lane of a row has the same running max).
template <int DP>
__global__ void __launch_bounds__(kThreads, DP >= 128 ? 1 : 2)
    segment_attention_kernel(const float* q, const float* k, const float* v, float* out, int64_t H, int dh,
                             const int32_t* tiles, float scale) {
  constexpr int S = DP + kPad, PS = kKeys + kPad;
  constexpr int C = DP / 16, VW = C < 4 ? C : 4, NV = C / VW;
  extern __shared__ float4 shared4[];
  float* qs = reinterpret_cast<float*>(shared4);  // [kRows][S]
  float* ks = qs + kRows * S;                      // [kKeys][S]
  float* vs = ks + kKeys * S;                      // [kKeys][S]
  float* ps = vs + kKeys * S;                      // [kRows][PS]
  const int tx = static_cast<int>(threadIdx.x) % 16, ty = static_cast<int>(threadIdx.x) / 16;
  const int32_t* tile = tiles + 4 * static_cast<int64_t>(blockIdx.x);
  const int32_t q0 = tile[0], q1 = tile[1], k_begin = tile[2], k_end = tile[3];
  const int64_t width = H * dh, col0 = blockIdx.y * static_cast<int64_t>(dh);
  load_tile<DP>(qs, q, q0, q1 - q0, width, col0, dh);

  float o[4][C], m[4], l[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    m[i] = -INFINITY, l[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < C; ++c) o[i][c] = 0.0f;
  }
  for (int32_t k0 = k_begin; k0 < k_end; k0 += kKeys) {
    const int n_keys = min(kKeys, k_end - k0);
    __syncthreads();  // the last tile's K, V and P are read
    load_tile<DP>(ks, k, k0, n_keys, width, col0, dh);
    load_tile<DP>(vs, v, k0, n_keys, width, col0, dh);
    __syncthreads();

    float s[4][4] = {};  // S = Q·Kᵀ
#pragma unroll 4
    for (int d = 0; d < DP; d += 4) {
      float4 qv[4], kv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) qv[i] = *reinterpret_cast<const float4*>(qs + (ty + 16 * i) * S + d);
#pragma unroll
      for (int j = 0; j < 4; ++j) kv[j] = *reinterpret_cast<const float4*>(ks + (tx + 16 * j) * S + d);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          s[i][j] = fmaf(qv[i].x, kv[j].x, s[i][j]);
          s[i][j] = fmaf(qv[i].y, kv[j].y, s[i][j]);
          s[i][j] = fmaf(qv[i].z, kv[j].z, s[i][j]);
          s[i][j] = fmaf(qv[i].w, kv[j].w, s[i][j]);
        }
      }
    }
    // Online softmax: the new running max of each row (finite: key k0 is in the segment), the old sums and outputs
    // scaled by exp(m_old - m_new) (0 on the first tile), P = exp(scale·s - m) into shared memory.
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        s[i][j] = tx + 16 * j < n_keys ? s[i][j] * scale : -INFINITY;
        mx = fmaxf(mx, s[i][j]);
      }
      const float m_new = fmaxf(m[i], row_max(mx));
      const float corr = expf(m[i] - m_new);
      m[i] = m_new;
      l[i] *= corr;
#pragma unroll
      for (int c = 0; c < C; ++c) o[i][c] *= corr;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float p = expf(s[i][j] - m_new);
        l[i] += p;
        ps[(ty + 16 * i) * PS + tx + 16 * j] = p;
      }
    }
    __syncthreads();

    // O += P·V over the tile's keys, four at a time (masked keys: P = 0 and V rows of zeros).
#pragma unroll 2
    for (int key = 0; key < kKeys; key += 4) {
      float4 p[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) p[i] = *reinterpret_cast<const float4*>(ps + (ty + 16 * i) * PS + key);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
#pragma unroll
        for (int mv = 0; mv < NV; ++mv) {
          float vv[VW];
          load_vec<VW>(vs + (key + e) * S + (16 * mv + tx) * VW, vv);
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const float pe = e == 0 ? p[i].x : e == 1 ? p[i].y : e == 2 ? p[i].z : p[i].w;
#pragma unroll
            for (int w = 0; w < VW; ++w) o[i][mv * VW + w] = fmaf(pe, vv[w], o[i][mv * VW + w]);
          }
        }
      }
    }
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) l[i] = row_sum(l[i]);  // every lane, before any leaves
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int32_t row = q0 + ty + 16 * i;
    if (row >= q1) continue;
    float* dst = out + row * width + col0;
#pragma unroll
    for (int mv = 0; mv < NV; ++mv) {
#pragma unroll
      for (int w = 0; w < VW; ++w) {
        const int c = (16 * mv + tx) * VW + w;
        if (c < dh) dst[c] = o[i][mv * VW + w] / l[i];
      }
    }
  }
}

template <int DP>
cudaError_t launch_segment_attention_dp(const float* q, const float* k, const float* v, float* out, int64_t H,
                                        int64_t dh, const int32_t* tiles, int64_t n_tiles, float scale,
                                        cudaStream_t stream) {
  const auto kernel = segment_attention_kernel<DP>;
  constexpr size_t shared = segment_shared_bytes(DP);
  if constexpr (shared > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared));
    if (e != cudaSuccess) return e;
  }
  const dim3 grid(static_cast<unsigned>(n_tiles), static_cast<unsigned>(H));
  kernel<<<grid, kThreads, shared, stream>>>(q, k, v, out, H, static_cast<int>(dh), tiles, scale);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_rope_2d(float* q, float* k, int64_t N, int64_t H, int64_t dh, const float* freq,
                           const int32_t* rows, const int32_t* cols, bool half_pairs, cudaStream_t stream) {
  const int64_t n = N * H * (dh / 2);
  if (n == 0) return cudaSuccess;
  rope_2d_kernel<<<std::min(blocks_for(n, 256), 4096u), 256, 0, stream>>>(q, k, N, H, dh, freq, rows, cols,
                                                                          half_pairs);
  return cudaGetLastError();
}

cudaError_t launch_segment_attention(const float* q, const float* k, const float* v, float* out, int64_t H,
                                     int64_t dh, const int32_t* tiles, int64_t n_tiles, float scale,
                                     cudaStream_t stream) {
  if (n_tiles == 0 || H == 0) return cudaSuccess;
  if (dh < 1 || dh > kSegmentAttentionMaxHeadDim || H > 65535 || n_tiles > 0x7fffffff) return cudaErrorInvalidValue;
  if (dh <= 16) return launch_segment_attention_dp<16>(q, k, v, out, H, dh, tiles, n_tiles, scale, stream);
  if (dh <= 32) return launch_segment_attention_dp<32>(q, k, v, out, H, dh, tiles, n_tiles, scale, stream);
  if (dh <= 64) return launch_segment_attention_dp<64>(q, k, v, out, H, dh, tiles, n_tiles, scale, stream);
  return launch_segment_attention_dp<128>(q, k, v, out, H, dh, tiles, n_tiles, scale, stream);
}

cudaError_t launch_gelu(float* x, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  gelu_kernel<<<std::min(blocks_for(n, 256), 4096u), 256, 0, stream>>>(x, n);
  return cudaGetLastError();
}

}  // namespace quatre::cuda
