// y = x · wᵀ against stored weights (F32/BF16/F16/FP8, dequantised in registers), fp32 accumulation: a warps-per-
// column kernel for small M (memory-bound decode: every weight byte is read once, 16 bytes a load, 4 loads in
// flight a lane, several warps a column when N is small), and for large M the tensor cores (matmul_tc.cu, BF16
// and FP8 weights) or a 64x64 shared-memory tile. All take the grouped (MoE) form of MatmulProblem. Depends on
// CUDA only.
#include "backend/cuda/matmul_common.cuh"

namespace quatre::cuda {
namespace {

constexpr int kSmallRows = 8;   // rows a warp of the small kernel carries
constexpr int kTile = 64;       // tile kernel: BM = BN = 64
constexpr int kTileK = 16;

// The VEC weights at wrow[k..k+VEC), as fp32 (unscaled): one 16-byte load when VEC > 1.
template <WType T, int VEC>
__device__ __forceinline__ void load_weights(const typename WTraits<T>::S* wrow, int64_t k, float (&wv)[VEC]) {
  using S = typename WTraits<T>::S;
  if constexpr (VEC > 1) {
    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(wrow + k));
    const S* e = reinterpret_cast<const S*>(&raw);
#pragma unroll
    for (int j = 0; j < VEC; ++j) wv[j] = WTraits<T>::to_f32(e[j]);
  } else {
    wv[0] = WTraits<T>::to_f32(wrow[k]);
  }
}

// acc[i] += x[row i, k..k+VEC) · wv for the rows present.
template <int VEC>
__device__ __forceinline__ void fma_rows(const float* const (&xr)[kSmallRows], int64_t k, const float (&wv)[VEC],
                                         float (&acc)[kSmallRows]) {
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

// grid (ceil(N / (8/WPC)), groups), 256 threads: the 8 warps form 8/WPC columns of WPC warps each. The WPC warps of
// column n take interleaved slices of its K (32·VEC weights a slice, kUnroll loads in flight per lane); their
// partial sums meet in shared memory, added in warp order (deterministic). WPC > 1 when N is too small to fill
// the GPU with one warp per column.
constexpr int kUnroll = 4;

template <WType T, int VEC, int WPC>
__global__ void __launch_bounds__(256) small_m_kernel(MatmulProblem p, int rows_per_group) {
  using S = typename WTraits<T>::S;
  constexpr int kCols = 8 / WPC;
  __shared__ float partial[8][kSmallRows];
  select_problem(p);
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int col = warp / WPC, sub = warp % WPC;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kCols + col;
  const int64_t group = blockIdx.y;
  const GroupView g = group_weight(p, group);
  if (g.skip) return;  // the whole block
  const int64_t m0 = group * rows_per_group;
  const int n_rows = static_cast<int>(p.M - m0 < rows_per_group ? p.M - m0 : rows_per_group);
  const float* xr[kSmallRows];
  for (int i = 0; i < kSmallRows; ++i) {
    const int64_t m = m0 + i;
    int64_t src = -1;
    // A row whose output is dropped (y_rows -1: a MoE group's padding) is not computed either: the routed down
    // of one token is 1 real row in a group of 8, and computing all 8 made it 8x the FMAs (compute-bound).
    if (i < n_rows && (p.y_rows == nullptr || p.y_rows[m] >= 0)) src = p.x_rows != nullptr ? p.x_rows[m] : m;
    xr[i] = src >= 0 ? p.x + src * p.ldx : nullptr;
  }
  float acc[kSmallRows] = {};
  if (n < p.N) {
    const S* wrow = static_cast<const S*>(g.w) + n * p.K;
    constexpr int64_t kStride = static_cast<int64_t>(WPC) * 32 * VEC;
    int64_t k = (static_cast<int64_t>(sub) * 32 + lane) * VEC;
    for (; k + (kUnroll - 1) * kStride < p.K; k += kUnroll * kStride) {
      float wv[kUnroll][VEC];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) load_weights<T, VEC>(wrow, k + u * kStride, wv[u]);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) fma_rows<VEC>(xr, k + u * kStride, wv[u], acc);
    }
    for (; k < p.K; k += kStride) {
      float wv[VEC];
      load_weights<T, VEC>(wrow, k, wv);
      fma_rows<VEC>(xr, k, wv, acc);
    }
  }
#pragma unroll
  for (int i = 0; i < kSmallRows; ++i) acc[i] = warp_sum(acc[i]);
  if constexpr (WPC == 1) {
#pragma unroll
    for (int i = 0; i < kSmallRows; ++i) {
      if (lane == 0 && n < p.N && xr[i] != nullptr) store(p, m0 + i, n, acc[i] * g.scale);
    }
  } else {
    if (lane == 0) {
#pragma unroll
      for (int i = 0; i < kSmallRows; ++i) partial[warp][i] = acc[i];
    }
    __syncthreads();
    if (sub == 0 && lane < kSmallRows && n < p.N && xr[lane] != nullptr) {
      float s = 0;
#pragma unroll
      for (int j = 0; j < WPC; ++j) s += partial[col * WPC + j][lane];
      store(p, m0 + lane, n, s * g.scale);
    }
  }
}

// grid (ceil(N/64), ceil(M/64)), 256 threads, each a 4x4 block of outputs (rows ty + 16i, columns tx + 16j).
template <WType T>
__global__ void __launch_bounds__(256) tile_kernel(MatmulProblem p) {
  using S = typename WTraits<T>::S;
  __shared__ float xs[kTileK][kTile + 4];
  __shared__ float ws[kTileK][kTile + 4];
  select_problem(p);
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

template <WType T, int VEC, int WPC>
void launch_small_wpc(const MatmulProblem& p, int rows_per_group, unsigned groups, cudaStream_t stream) {
  const dim3 grid(blocks_for(p.N, 8 / WPC), groups, p.y2 != nullptr ? 2 : 1);
  small_m_kernel<T, VEC, WPC><<<grid, 256, 0, stream>>>(p, rows_per_group);
}

// Warps per column: the fewest that give about 4 blocks per SM of an H100/H200 (132 SMs), while every lane keeps
// at least one 16-byte load.
int warps_per_column(int64_t N, int64_t K, unsigned groups, int vec) {
  int wpc = 1;
  while (wpc < 8 && static_cast<int64_t>(blocks_for(N, 8 / wpc)) * groups < 4 * 132 && K >= 2 * wpc * 32 * vec) {
    wpc *= 2;
  }
  return wpc;
}

template <WType T, int VEC>
void launch_small_vec(const MatmulProblem& p, int rows_per_group, unsigned groups, cudaStream_t stream) {
  switch (warps_per_column(p.N, p.K, groups, VEC)) {
    case 1: launch_small_wpc<T, VEC, 1>(p, rows_per_group, groups, stream); break;
    case 2: launch_small_wpc<T, VEC, 2>(p, rows_per_group, groups, stream); break;
    case 4: launch_small_wpc<T, VEC, 4>(p, rows_per_group, groups, stream); break;
    default: launch_small_wpc<T, VEC, 8>(p, rows_per_group, groups, stream); break;
  }
}

template <WType T>
cudaError_t launch_small(const MatmulProblem& p, int rows_per_group, cudaStream_t stream) {
  using S = typename WTraits<T>::S;
  constexpr int kVec = 16 / sizeof(S);
  const auto groups = static_cast<unsigned>((p.M + rows_per_group - 1) / rows_per_group);
  // 16-byte loads need every weight row 16-byte aligned (allocations are 256-byte aligned).
  const bool aligned = p.K % kVec == 0 && p.ldx % 4 == 0 && reinterpret_cast<uintptr_t>(p.x) % 16 == 0;
  const bool all_aligned = aligned && (p.experts != nullptr || (reinterpret_cast<uintptr_t>(p.weight.w) % 16 == 0 &&
                                                                reinterpret_cast<uintptr_t>(p.weight2.w) % 16 == 0));
  if (all_aligned) {
    launch_small_vec<T, kVec>(p, rows_per_group, groups, stream);
  } else {
    launch_small_vec<T, 1>(p, rows_per_group, groups, stream);
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
    if (matmul_tc_applies(p)) return launch_matmul_tc(p, stream);
    const dim3 grid(blocks_for(p.N, kTile), blocks_for(p.M, kTile), p.y2 != nullptr ? 2 : 1);
    tile_kernel<T><<<grid, 256, 0, stream>>>(p);
    return cudaGetLastError();
  });
}

}  // namespace quatre::cuda
