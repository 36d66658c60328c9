// y = x · wᵀ against stored weights (F32/BF16/F16/FP8, dequantised in registers), fp32 accumulation: a warp-per-
// column kernel for small M (memory-bound decode: every weight byte is read once, 16 bytes a load), a 64x64
// shared-memory tile for large M. Both take the grouped (MoE) form of MatmulProblem. Depends on CUDA only.
#include "backend/cuda/device_math.cuh"

namespace quatre::cuda {
namespace {

constexpr int kSmallRows = 8;   // rows a warp of the small kernel carries
constexpr int kTile = 64;       // tile kernel: BM = BN = 64
constexpr int kTileK = 16;

struct GroupView {
  const void* w;
  float scale;
  bool skip;
};

__device__ __forceinline__ GroupView group_weight(const MatmulProblem& p, int64_t group) {
  if (p.experts == nullptr) return {p.weight.w, p.weight.scale, false};
  const int32_t e = p.group_expert[group];
  if (e < 0) return {nullptr, 0.0f, true};
  return {p.experts[e].w, p.experts[e].scale, false};
}

__device__ __forceinline__ void store(const MatmulProblem& p, int64_t m, int64_t n, float v) {
  const int64_t row = p.y_rows != nullptr ? p.y_rows[m] : m;
  if (row < 0) return;
  if (p.row_scale != nullptr) v *= p.row_scale[row];
  float* dst = p.y + row * p.ldy + n;
  *dst = p.accumulate ? *dst + v : v;
}

// grid (ceil(N/8), groups), 256 threads: warp w of block b computes column n = 8b + w for the group's rows.
template <WType T, int VEC>
__global__ void __launch_bounds__(256) small_m_kernel(MatmulProblem p, int rows_per_group) {
  using S = typename WTraits<T>::S;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * 8 + warp;
  const int64_t group = blockIdx.y;
  if (n >= p.N) return;
  const GroupView g = group_weight(p, group);
  if (g.skip) return;
  const int64_t m0 = group * rows_per_group;
  const int n_rows = static_cast<int>(p.M - m0 < rows_per_group ? p.M - m0 : rows_per_group);
  const float* xr[kSmallRows];
  for (int i = 0; i < kSmallRows; ++i) {
    const int64_t m = m0 + i;
    int64_t src = -1;
    if (i < n_rows) src = p.x_rows != nullptr ? p.x_rows[m] : m;
    xr[i] = src >= 0 ? p.x + src * p.ldx : nullptr;
  }
  const S* wrow = static_cast<const S*>(g.w) + n * p.K;
  float acc[kSmallRows] = {};
  for (int64_t k = static_cast<int64_t>(lane) * VEC; k < p.K; k += 32 * VEC) {
    float wv[VEC];
    if constexpr (VEC > 1) {
      const uint4 raw = *reinterpret_cast<const uint4*>(wrow + k);
      const S* e = reinterpret_cast<const S*>(&raw);
#pragma unroll
      for (int j = 0; j < VEC; ++j) wv[j] = WTraits<T>::to_f32(e[j]);
    } else {
      wv[0] = WTraits<T>::to_f32(wrow[k]);
    }
#pragma unroll
    for (int i = 0; i < kSmallRows; ++i) {
      if (xr[i] == nullptr) continue;
      if constexpr (VEC >= 4) {  // activations in 16-byte loads too (rows 16-byte aligned: checked at launch)
#pragma unroll
        for (int j = 0; j < VEC; j += 4) {
          const float4 xv = *reinterpret_cast<const float4*>(xr[i] + k + j);
          acc[i] = fmaf(xv.x, wv[j], acc[i]);
          acc[i] = fmaf(xv.y, wv[j + 1], acc[i]);
          acc[i] = fmaf(xv.z, wv[j + 2], acc[i]);
          acc[i] = fmaf(xv.w, wv[j + 3], acc[i]);
        }
      } else {
#pragma unroll
        for (int j = 0; j < VEC; ++j) acc[i] = fmaf(xr[i][k + j], wv[j], acc[i]);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kSmallRows; ++i) {
    const float s = warp_sum(acc[i]);
    if (lane == 0 && xr[i] != nullptr) store(p, m0 + i, n, s * g.scale);
  }
}

// grid (ceil(N/64), ceil(M/64)), 256 threads, each a 4x4 block of outputs (rows ty + 16i, columns tx + 16j).
template <WType T>
__global__ void __launch_bounds__(256) tile_kernel(MatmulProblem p) {
  using S = typename WTraits<T>::S;
  __shared__ float xs[kTileK][kTile + 4];
  __shared__ float ws[kTileK][kTile + 4];
  const int tid = static_cast<int>(threadIdx.x), tx = tid % 16, ty = tid / 16;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTile, n0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const GroupView g = group_weight(p, p.experts != nullptr ? m0 / p.rows_per_group : 0);
  if (g.skip) return;
  const S* w = static_cast<const S*>(g.w);
  // Loader roles: 64 rows x 16 k per tile, 4 consecutive k per thread.
  const int lr = tid / 4, lk = (tid % 4) * 4;
  const int64_t lm = m0 + lr, ln = n0 + lr;
  int64_t src = -1;
  if (lm < p.M) src = p.x_rows != nullptr ? p.x_rows[lm] : lm;
  const float* xrow = src >= 0 ? p.x + src * p.ldx : nullptr;
  const S* wrow = ln < p.N ? w + ln * p.K : nullptr;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < p.K; k0 += kTileK) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t k = k0 + lk + j;
      xs[lk + j][lr] = (xrow != nullptr && k < p.K) ? xrow[k] : 0.0f;
      ws[lk + j][lr] = (wrow != nullptr && k < p.K) ? WTraits<T>::to_f32(wrow[k]) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTileK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = xs[kk][ty + 16 * i], b[i] = ws[kk][tx + 16 * i];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty + 16 * i;
    if (m >= p.M) continue;
    if (p.x_rows != nullptr && p.x_rows[m] < 0) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t n = n0 + tx + 16 * j;
      if (n < p.N) store(p, m, n, acc[i][j] * g.scale);
    }
  }
}

template <WType T>
cudaError_t launch_small(const MatmulProblem& p, int rows_per_group, cudaStream_t stream) {
  using S = typename WTraits<T>::S;
  constexpr int kVec = 16 / sizeof(S);
  const dim3 grid(blocks_for(p.N, 8), static_cast<unsigned>((p.M + rows_per_group - 1) / rows_per_group));
  // 16-byte loads need every weight row 16-byte aligned (allocations are 256-byte aligned).
  const bool aligned = p.K % kVec == 0 && p.ldx % 4 == 0 && reinterpret_cast<uintptr_t>(p.x) % 16 == 0;
  bool all_aligned = aligned && (p.experts != nullptr || reinterpret_cast<uintptr_t>(p.weight.w) % 16 == 0);
  if (all_aligned) {
    small_m_kernel<T, kVec><<<grid, 256, 0, stream>>>(p, rows_per_group);
  } else {
    small_m_kernel<T, 1><<<grid, 256, 0, stream>>>(p, rows_per_group);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_matmul(const MatmulProblem& p, cudaStream_t stream) {
  if (p.M == 0 || p.N == 0) return cudaSuccess;
  const bool grouped = p.experts != nullptr;
  const bool small = grouped ? p.rows_per_group <= kSmallRows : p.M <= kSmallRows;
  if (grouped && !small && p.rows_per_group != kTile) return cudaErrorInvalidValue;
  return dispatch_wtype(p.weight.type, [&](auto tag) -> cudaError_t {
    constexpr WType T = decltype(tag)::value;
    if (small) return launch_small<T>(p, grouped ? p.rows_per_group : kSmallRows, stream);
    const dim3 grid(blocks_for(p.N, kTile), blocks_for(p.M, kTile));
    tile_kernel<T><<<grid, 256, 0, stream>>>(p);
    return cudaGetLastError();
  });
}

}  // namespace quatre::cuda
