// y = x · wᵀ against stored weights (F32/BF16/F16/FP8 and 4-bit, dequantised in registers), fp32 accumulation: a
// warps-per-column kernel for small M (memory-bound decode: every weight byte is read once, 16 bytes a load, 4 loads
// in flight a lane, several warps a column when N is small; 4-bit: 32 codes a load, ~0.52 bytes a weight with the
// G=128 scales), and for large M the tensor cores (matmul_tc.cu, BF16 and FP8 weights) or a 64x64 shared-memory
// tile (every type, 4-bit included). All take the grouped (MoE) form of MatmulProblem. Depends on CUDA only.
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

// The x row of each of the group's rows m0 + i (null: past M, or padding).
__device__ __forceinline__ void group_rows(const MatmulProblem& p, int64_t m0, int rows_per_group,
                                           const float* (&xr)[kSmallRows]) {
  const int n_rows = static_cast<int>(p.M - m0 < rows_per_group ? p.M - m0 : rows_per_group);
  for (int i = 0; i < kSmallRows; ++i) {
    const int64_t m = m0 + i;
    int64_t src = -1;
    // A row whose output is dropped (y_rows -1: a MoE group's padding) is not computed either: the routed down
    // of one token is 1 real row in a group of 8, and computing all 8 made it 8x the FMAs (compute-bound).
    if (i < n_rows && (p.y_rows == nullptr || p.y_rows[m] >= 0)) src = p.x_rows != nullptr ? p.x_rows[m] : m;
    xr[i] = src >= 0 ? p.x + src * p.ldx : nullptr;
  }
}

// Column n's sums: over the warp, then over the column's WPC warps in warp order (deterministic); stored times scale.
template <int WPC>
__device__ __forceinline__ void reduce_store(const MatmulProblem& p, int warp, int lane, int64_t m0, int64_t n,
                                             const float* const (&xr)[kSmallRows], float (&acc)[kSmallRows],
                                             float scale) {
  __shared__ float partial[8][kSmallRows];
  const int col = warp / WPC, sub = warp % WPC;
#pragma unroll
  for (int i = 0; i < kSmallRows; ++i) acc[i] = warp_sum(acc[i]);
  if constexpr (WPC == 1) {
#pragma unroll
    for (int i = 0; i < kSmallRows; ++i) {
      if (lane == 0 && n < p.N && xr[i] != nullptr) store(p, m0 + i, n, acc[i] * scale);
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
      store(p, m0 + lane, n, s * scale);
    }
  }
}

// Three blocks an SM (ptxas then gives 80 registers; unbounded it picks 112-118 for FP8/BF16: 2 blocks): more
// weight loads in flight a SM; the FP8/BF16 forms spill 50-170 bytes a thread to L1, and are faster all the same
// (H100, 16 layers: batch 1 3%, batch 64 4.5%; bench/RESULTS.md).
template <WType T, int VEC, int WPC>
__global__ void __launch_bounds__(256, 3) small_m_kernel(MatmulProblem p, int rows_per_group) {
  using S = typename WTraits<T>::S;
  constexpr int kCols = 8 / WPC;
  select_problem(p);
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int col = warp / WPC, sub = warp % WPC;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kCols + col;
  const int64_t group = blockIdx.y;
  const GroupView g = group_weight(p, group);
  if (g.skip) return;  // the whole block
  const int64_t m0 = group * rows_per_group;
  const float* xr[kSmallRows];
  group_rows(p, m0, rows_per_group, xr);
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
  reduce_store<WPC>(p, warp, lane, m0, n, xr, acc, g.scale);
}

// 4-bit weights (core/int4.h). A lane's 16-byte load holds the 32 codes of columns [k, k+32), all in one group
// (group sizes are multiples of 32). Symmetric: the codes become c - 8 (exact) and a row's 32 products are summed
// before the group's scale multiplies them (one multiply per 32 weights, not per weight); asymmetric: each weight
// is s * c + m rounded as core/int4.h rounds it. Either way within fp32 summation-order error of the CPU backend.
constexpr int kInt4Vec = 32;

// The codes of a load, in column order, as c - 8 (symmetric) or s * c + m (asymmetric).
template <bool kSymmetric>
__device__ __forceinline__ void decode_int4(uint4 raw, float s, float m, float (&w)[kInt4Vec]) {
  // 0x4B000000 | c is the float 2^23 + c: one byte permute a code, and one exact subtraction.
  constexpr float kBias = kSymmetric ? 8388616.0f : 8388608.0f;  // 2^23 + 8, 2^23
  const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const uint32_t even = words[q] & 0x0F0F0F0Fu, odd = (words[q] >> 4) & 0x0F0F0F0Fu;  // low / high nibbles
#pragma unroll
    for (int b = 0; b < 4; ++b) {
      w[8 * q + 2 * b] = __uint_as_float(__byte_perm(even, 0x4B000000u, 0x7440u | b)) - kBias;
      w[8 * q + 2 * b + 1] = __uint_as_float(__byte_perm(odd, 0x4B000000u, 0x7440u | b)) - kBias;
    }
  }
  if constexpr (!kSymmetric) {
#pragma unroll
    for (int j = 0; j < kInt4Vec; ++j) w[j] = __fadd_rn(__fmul_rn(s, w[j]), m);
  }
}

// acc[i] += x[row i, k..k+32) · (s ⊙ w) (symmetric) or · w (asymmetric), for the rows present.
template <bool kSymmetric, bool kXVec>
__device__ __forceinline__ void int4_fma_rows(const float* const (&xr)[kSmallRows], int64_t k,
                                              const float (&w)[kInt4Vec], float s, float (&acc)[kSmallRows]) {
#pragma unroll
  for (int i = 0; i < kSmallRows; ++i) {
    if (xr[i] == nullptr) continue;
    float sum = kSymmetric ? 0.0f : acc[i];
#pragma unroll
    for (int j = 0; j < kInt4Vec; j += 4) {
      float4 xv;
      if constexpr (kXVec) {
        xv = *reinterpret_cast<const float4*>(xr[i] + k + j);
      } else {
        xv = make_float4(xr[i][k + j], xr[i][k + j + 1], xr[i][k + j + 2], xr[i][k + j + 3]);
      }
      sum = fmaf(xv.x, w[j], sum);
      sum = fmaf(xv.y, w[j + 1], sum);
      sum = fmaf(xv.z, w[j + 2], sum);
      sum = fmaf(xv.w, w[j + 3], sum);
    }
    acc[i] = kSymmetric ? fmaf(s, sum, acc[i]) : sum;
  }
}

// Group of column k of a row: a shift when the group size is a power of two.
__device__ __forceinline__ int64_t int4_group(int64_t k, int group_size, int group_shift) {
  if (group_shift >= 0) return k >> group_shift;
  return static_cast<int64_t>(static_cast<uint32_t>(k) / static_cast<uint32_t>(group_size));
}

// The launch of small_m_kernel with 4-bit weights: same grid, warps and reduction.
// One warp a column (the routed experts): three blocks an SM, as small_m_kernel (80 registers, 24-52 bytes of spills
// in the float4 forms; batch 8 7% and batch 64 6% faster on an H100). Several warps a column: 166-185 registers, one
// block an SM either way.
template <bool kSymmetric, bool kXVec, int WPC>
__global__ void __launch_bounds__(256, WPC == 1 ? 3 : 1) small_m_int4_kernel(MatmulProblem p, int rows_per_group) {
  constexpr int kCols = 8 / WPC;
  select_problem(p);
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int col = warp / WPC, sub = warp % WPC;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kCols + col;
  const int64_t group = blockIdx.y;
  bool skip = false;
  const DevWeight w = group_dev_weight(p, group, skip);
  if (skip) return;  // the whole block
  const int64_t m0 = group * rows_per_group;
  const float* xr[kSmallRows];
  group_rows(p, m0, rows_per_group, xr);
  float acc[kSmallRows] = {};
  if (n < p.N) {
    const int G = w.group_size;
    const int group_shift = (G & (G - 1)) == 0 ? __ffs(G) - 1 : -1;
    const int64_t n_groups = p.K / G;
    const auto* codes = static_cast<const uint8_t*>(w.w) + n * (p.K / 2);  // [K/2]
    const uint16_t* scales = w.int4_scales + n * n_groups;                  // [K/G]
    const uint16_t* offsets = kSymmetric ? nullptr : w.int4_offsets + n * n_groups;
    constexpr int64_t kStride = static_cast<int64_t>(WPC) * 32 * kInt4Vec;
    int64_t k = (static_cast<int64_t>(sub) * 32 + lane) * kInt4Vec;
    for (; k + (kUnroll - 1) * kStride < p.K; k += kUnroll * kStride) {
      uint4 raw[kUnroll];
      float s[kUnroll], m[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t ku = k + u * kStride, g = int4_group(ku, G, group_shift);
        raw[u] = __ldg(reinterpret_cast<const uint4*>(codes + ku / 2));
        s[u] = bf16_bits_to_f32(__ldg(scales + g));
        m[u] = kSymmetric ? 0.0f : bf16_bits_to_f32(__ldg(offsets + g));
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        float wv[kInt4Vec];
        decode_int4<kSymmetric>(raw[u], s[u], m[u], wv);
        int4_fma_rows<kSymmetric, kXVec>(xr, k + u * kStride, wv, s[u], acc);
      }
    }
    for (; k < p.K; k += kStride) {
      const int64_t g = int4_group(k, G, group_shift);
      const float s = bf16_bits_to_f32(__ldg(scales + g));
      const float m = kSymmetric ? 0.0f : bf16_bits_to_f32(__ldg(offsets + g));
      float wv[kInt4Vec];
      decode_int4<kSymmetric>(__ldg(reinterpret_cast<const uint4*>(codes + k / 2)), s, m, wv);
      int4_fma_rows<kSymmetric, kXVec>(xr, k, wv, s, acc);
    }
  }
  reduce_store<WPC>(p, warp, lane, m0, n, xr, acc, 1.0f);
}

// The scales (and offsets) of one row of a 4-bit weight, for the tile kernel's loader.
struct Int4Row {
  const uint16_t* scales = nullptr;   // [K/G]
  const uint16_t* offsets = nullptr;  // [K/G]; null when symmetric
  int group_size = 0;
};

// Weights [k, k+4) of a 4-bit row (k % 4 == 0: one group, two bytes of codes), by core/int4.h's rule exactly.
__device__ __forceinline__ void int4_dequant4(const uint8_t* codes, const Int4Row& r, int64_t k, float (&v)[4]) {
  const uint32_t g = static_cast<uint32_t>(k) / static_cast<uint32_t>(r.group_size);
  const float s = bf16_bits_to_f32(r.scales[g]);
  const uint32_t nibbles = codes[k / 2] | (static_cast<uint32_t>(codes[k / 2 + 1]) << 8);  // columns k..k+3
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const auto c = static_cast<int>((nibbles >> (4 * j)) & 0xF);
    v[j] = r.offsets == nullptr ? s * static_cast<float>(c - 8)
                                : __fadd_rn(__fmul_rn(s, static_cast<float>(c)), bf16_bits_to_f32(r.offsets[g]));
  }
}

// grid (ceil(N/64), ceil(M/64)), 256 threads, each a 4x4 block of outputs (rows ty + 16i, columns tx + 16j).
// 4-bit weights: a thread's 4 weights of a k-tile lie in one group (group sizes are multiples of 32).
template <WType T>
__global__ void __launch_bounds__(256) tile_kernel(MatmulProblem p) {
  using S = typename WTraits<T>::S;
  __shared__ float xs[kTileK][kTile + 4];
  __shared__ float ws[kTileK][kTile + 4];
  select_problem(p);
  const int tid = static_cast<int>(threadIdx.x), tx = tid % 16, ty = tid / 16;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTile, n0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t group = p.experts != nullptr ? m0 / p.rows_per_group : 0;
  const GroupView g = group_weight(p, group);
  if (g.skip) return;
  const S* w = static_cast<const S*>(g.w);
  // Loader roles: 64 rows x 16 k per tile, 4 consecutive k per thread.
  const int lr = tid / 4, lk = (tid % 4) * 4;
  const int64_t lm = m0 + lr, ln = n0 + lr;
  int64_t src = -1;
  if (lm < p.M) src = p.x_rows != nullptr ? p.x_rows[lm] : lm;
  const float* xrow = src >= 0 ? p.x + src * p.ldx : nullptr;
  const S* wrow = ln < p.N ? w + ln * (T == WType::kInt4 ? p.K / 2 : p.K) : nullptr;  // 4-bit: the row's codes
  [[maybe_unused]] Int4Row w4{};
  if constexpr (T == WType::kInt4) {
    bool skip = false;
    const DevWeight dw = group_dev_weight(p, group, skip);
    const int64_t n_groups = p.K / dw.group_size;
    w4 = {dw.int4_scales + ln * n_groups, dw.int4_offsets != nullptr ? dw.int4_offsets + ln * n_groups : nullptr,
          dw.group_size};
  }
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < p.K; k0 += kTileK) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t k = k0 + lk + j;
      xs[lk + j][lr] = (xrow != nullptr && k < p.K) ? xrow[k] : 0.0f;
      if constexpr (T != WType::kInt4) {
        ws[lk + j][lr] = (wrow != nullptr && k < p.K) ? WTraits<T>::to_f32(wrow[k]) : 0.0f;
      }
    }
    if constexpr (T == WType::kInt4) {
      float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      if (wrow != nullptr && k0 + lk < p.K) int4_dequant4(wrow, w4, k0 + lk, v);
#pragma unroll
      for (int j = 0; j < 4; ++j) ws[lk + j][lr] = v[j];
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

template <bool kSymmetric, bool kXVec, int WPC>
void launch_small_int4_wpc(const MatmulProblem& p, int rows_per_group, unsigned groups, cudaStream_t stream) {
  const dim3 grid(blocks_for(p.N, 8 / WPC), groups, p.y2 != nullptr ? 2 : 1);
  small_m_int4_kernel<kSymmetric, kXVec, WPC><<<grid, 256, 0, stream>>>(p, rows_per_group);
}

template <bool kSymmetric, bool kXVec>
void launch_small_int4(const MatmulProblem& p, int rows_per_group, unsigned groups, cudaStream_t stream) {
  switch (warps_per_column(p.N, p.K, groups, kInt4Vec)) {
    case 1: launch_small_int4_wpc<kSymmetric, kXVec, 1>(p, rows_per_group, groups, stream); break;
    case 2: launch_small_int4_wpc<kSymmetric, kXVec, 2>(p, rows_per_group, groups, stream); break;
    case 4: launch_small_int4_wpc<kSymmetric, kXVec, 4>(p, rows_per_group, groups, stream); break;
    default: launch_small_int4_wpc<kSymmetric, kXVec, 8>(p, rows_per_group, groups, stream); break;
  }
}

// 4-bit weights: group sizes a multiple of 32 that divide K, 16-byte aligned codes (checked by the host too, with
// messages; here an invalid-value error). weight2 and the experts have weight's symmetry (the host checks).
cudaError_t launch_int4(const MatmulProblem& p, bool grouped, bool small, cudaStream_t stream) {
  const int G = p.weight.group_size;
  if (G <= 0 || G % kInt4GroupMultiple != 0 || p.K % G != 0) return cudaErrorInvalidValue;
  if (!grouped && (reinterpret_cast<uintptr_t>(p.weight.w) % 16 != 0 ||
                   (p.y2 != nullptr && reinterpret_cast<uintptr_t>(p.weight2.w) % 16 != 0))) {
    return cudaErrorInvalidValue;
  }
  const bool is_symmetric = p.weight.int4_offsets == nullptr;
  if (small) {
    const int rows_per_group = grouped ? p.rows_per_group : kSmallRows;
    const auto groups = static_cast<unsigned>((p.M + rows_per_group - 1) / rows_per_group);
    const bool x_vec = p.ldx % 4 == 0 && reinterpret_cast<uintptr_t>(p.x) % 16 == 0;
    if (is_symmetric) {
      x_vec ? launch_small_int4<true, true>(p, rows_per_group, groups, stream)
            : launch_small_int4<true, false>(p, rows_per_group, groups, stream);
    } else {
      x_vec ? launch_small_int4<false, true>(p, rows_per_group, groups, stream)
            : launch_small_int4<false, false>(p, rows_per_group, groups, stream);
    }
    return cudaGetLastError();
  }
  const dim3 grid(blocks_for(p.N, kTile), blocks_for(p.M, kTile), p.y2 != nullptr ? 2 : 1);
  tile_kernel<WType::kInt4><<<grid, 256, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_matmul(const MatmulProblem& p, cudaStream_t stream) {
  if (p.M == 0 || p.N == 0) return cudaSuccess;
  const bool grouped = p.experts != nullptr;
  const bool small = grouped ? p.rows_per_group <= kSmallRows : p.M <= kSmallRows;
  if (grouped && !small && p.rows_per_group != kTile) return cudaErrorInvalidValue;
  if (p.weight.type == WType::kInt4) return launch_int4(p, grouped, small, stream);
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
