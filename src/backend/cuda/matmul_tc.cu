// y = x · wᵀ on the tensor cores for M > 8 rows (prefill, large decode batches, MoE groups of 64 rows) with
// BF16 or FP8 weights: BF16 mma.sync m16n8k16 with fp32 accumulation. FP8 E4M3 and BF16 weights are exact in
// BF16; the fp32 activations are split into three BF16 terms x = hi + mid + lo (24 significant bits, as fp32)
// and each term is multiplied against the weight tile, so the result matches fp32 arithmetic up to summation
// order. Block tile 64 rows x 128 columns x 32 k, 8 warps of 32x32, operands staged in shared memory (ldmatrix),
// the next k-tile's global loads in flight during the current tile's MMAs. QUATRE_CUDA_TC=0 turns it off (the
// CUDA-core tile kernel then runs).
// W8A8 (FP8 weights with a static activation scale, DevWeight::act_scale): tc_fp8_kernel, the same tiling with
// FP8 E4M3 operands on m16n8k32 (64 k a tile): the activations quantised as they are staged (or taken as they are
// where the caller quantised them, MatmulProblem::x_quantized), one mma where the
// three-term path takes six of half the k. Depends on CUDA only.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "backend/cuda/matmul_common.cuh"

namespace quatre::cuda {
namespace {

constexpr int kBM = 64, kBN = 128, kBK = 32;
constexpr int kRow = kBK + 8;  // bf16 per shared row: 80 bytes, so that ldmatrix rows fall in distinct banks
constexpr int kBK8 = 64;       // tc_fp8_kernel: k (bytes) a tile, in the same 80-byte shared rows
constexpr int kRow8 = kBK8 + 16;
constexpr int kTerms = 3;      // hi, mid, lo
constexpr int64_t kMaxKSplits = 16;

__device__ __forceinline__ uint16_t bf16_bits(float v) {
  const __nv_bfloat16 b = __float2bfloat16_rn(v);
  return *reinterpret_cast<const uint16_t*>(&b);
}
__device__ __forceinline__ float bf16_value(uint16_t bits) { return __uint_as_float(static_cast<uint32_t>(bits) << 16); }

// The 8 activations [row, k..k+8) of a thread (zeros past K or for padding rows); act: W8A8 (act_q), else 0.
__device__ __forceinline__ void load_x(const float* xrow, int64_t k, int64_t K, bool vec, float act, float (&v)[8]) {
  if (xrow != nullptr && vec && k + 8 <= K) {
    const float4 a = act_q4(*reinterpret_cast<const float4*>(xrow + k), act),
                 b = act_q4(*reinterpret_cast<const float4*>(xrow + k + 4), act);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
    return;
  }
#pragma unroll
  for (int j = 0; j < 8; ++j) v[j] = xrow != nullptr && k + j < K ? act_q(xrow[k + j], act) : 0.0f;
}

// W8A8: the 16 activations [row, k..k+16) of a thread as FP8 bytes of x / act (zeros past K or for padding rows).
__device__ __forceinline__ uint4 load_x_fp8(const float* xrow, int64_t k, int64_t K, float act) {
  float v[16];
  if (xrow != nullptr && k + 16 <= K) {  // launch: ldx % 4 == 0 and x 16-byte aligned
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const float4 f = *reinterpret_cast<const float4*>(xrow + k + 4 * q);
      v[4 * q] = f.x, v[4 * q + 1] = f.y, v[4 * q + 2] = f.z, v[4 * q + 3] = f.w;
    }
  } else {
#pragma unroll
    for (int j = 0; j < 16; ++j) v[j] = xrow != nullptr && k + j < K ? xrow[k + j] : 0.0f;
  }
  uint32_t word[4];
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    word[q] = static_cast<uint32_t>(act_fp8x2(v[4 * q], v[4 * q + 1], act)) |
              static_cast<uint32_t>(act_fp8x2(v[4 * q + 2], v[4 * q + 3], act)) << 16;
  }
  return make_uint4(word[0], word[1], word[2], word[3]);
}

// The 16 weight bytes [n, k..k+16) of a thread (K % 16 == 0 and 16-byte aligned rows: a load lies in or past K).
__device__ __forceinline__ uint4 load_w_fp8(const uint8_t* wrow, int64_t k, int64_t K) {
  return wrow != nullptr && k < K ? __ldg(reinterpret_cast<const uint4*>(wrow + k)) : make_uint4(0, 0, 0, 0);
}

// The block's tile of outputs from the warps' accumulators: fragment (mt, nt) holds rows wm + 16mt + lane/4 (+8)
// and columns wn + 8nt + 2(lane%4) (+1), times `scale`; into y through the epilogue (store), or, split over K, the
// unrounded partial tile into `partial` [M][N].
__device__ __forceinline__ void store_tile(const MatmulProblem& p, const float (&acc)[2][4][4], int64_t m0, int64_t n0,
                                           int wm, int wn, int lane, float scale, float* partial) {
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int64_t m = m0 + wm + 16 * mt + lane / 4 + 8 * half;
      if (m >= p.M || (p.x_rows != nullptr && p.x_rows[m] < 0)) continue;
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int64_t n = n0 + wn + 8 * nt + 2 * (lane % 4) + c;
          if (n >= p.N) continue;
          if (partial != nullptr) {
            partial[m * p.N + n] = acc[mt][nt][2 * half + c] * scale;
          } else {
            store(p, m, n, acc[mt][nt][2 * half + c] * scale);
          }
        }
      }
    }
  }
}

// The 16 weights [n, k..k+16) of a thread as BF16 bits (exact for BF16 and FP8 E4M3).
template <WType T>
__device__ __forceinline__ void load_w(const typename WTraits<T>::S* wrow, int64_t k, int64_t K, bool vec,
                                       uint16_t (&v)[16]) {
  using S = typename WTraits<T>::S;
  if (wrow != nullptr && vec && k + 16 <= K) {
    alignas(16) S raw[16];
    if constexpr (sizeof(S) == 1) {
      *reinterpret_cast<uint4*>(raw) = __ldg(reinterpret_cast<const uint4*>(wrow + k));
    } else {
      reinterpret_cast<uint4*>(raw)[0] = __ldg(reinterpret_cast<const uint4*>(wrow + k));
      reinterpret_cast<uint4*>(raw)[1] = __ldg(reinterpret_cast<const uint4*>(wrow + k + 8));
    }
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      if constexpr (T == WType::kBF16) {
        v[j] = raw[j];
      } else {
        v[j] = bf16_bits(WTraits<T>::to_f32(raw[j]));
      }
    }
    return;
  }
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    v[j] = 0;
    if (wrow == nullptr || k + j >= K) continue;
    if constexpr (T == WType::kBF16) {
      v[j] = wrow[k + j];
    } else {
      v[j] = bf16_bits(WTraits<T>::to_f32(wrow[k + j]));
    }
  }
}

// A block's share of a tile launch (tc_kernel, tc_fp8_kernel): its problem (p becomes the second one in the upper z
// slices), its k range [k_begin, k_end) of whole k tiles of `bk` over k_splits, its tile origin (m0, n0), its row
// group's weight, and the x row of its loader row xr (null: padding, or past M).
struct TileBlock {
  int64_t k_begin, k_end, m0, n0;
  GroupView g;
  const float* xrow;
};
__device__ __forceinline__ TileBlock tile_block(MatmulProblem& p, int k_splits, int64_t bk, int xr) {
  const int problem = static_cast<int>(blockIdx.z) / k_splits, split = static_cast<int>(blockIdx.z) % k_splits;
  if (problem == 1) p.weight = p.weight2, p.experts = p.experts2, p.y = p.y2;
  const int64_t k_tiles = (p.K + bk - 1) / bk;
  const int64_t k_per_split = (k_tiles + k_splits - 1) / k_splits * bk;
  TileBlock b;
  b.k_begin = split * k_per_split;
  b.k_end = min(p.K, b.k_begin + k_per_split);
  b.m0 = static_cast<int64_t>(blockIdx.y) * kBM;
  b.n0 = static_cast<int64_t>(blockIdx.x) * kBN;
  b.g = group_weight(p, p.experts != nullptr ? b.m0 / p.rows_per_group : 0);
  int64_t src = -1;
  if (b.m0 + xr < p.M) src = p.x_rows != nullptr ? p.x_rows[b.m0 + xr] : b.m0 + xr;
  b.xrow = src >= 0 ? p.x + src * p.ldx : nullptr;
  return b;
}

// grid (ceil(N/128), ceil(M/64), problems · k_splits), 256 threads; warp w computes rows 32·(w%2).. and columns
// 32·(w/2).. of the tile. With k_splits > 1 (plain problems whose tiles leave SMs idle) block z takes the k tiles of
// split z % k_splits and writes its unrounded partial tile (times the weight scale) to split_ws, [z][M][N]; the sum
// kernel below adds the splits in order and stores.
template <WType T>
__global__ void __launch_bounds__(256) tc_kernel(MatmulProblem p, bool vec_x, bool vec_w, int k_splits, float* split_ws) {
  using S = typename WTraits<T>::S;
  __shared__ __align__(16) uint16_t xs[kTerms][kBM][kRow];
  __shared__ __align__(16) uint16_t ws[kBN][kRow];
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  // Loader roles: x rows tid/4, 8 k each; weight rows tid/2, 16 k each.
  const int xr = tid / 4, xk = (tid % 4) * 8, wr = tid / 2, wk = (tid % 2) * 16;
  const TileBlock blk = tile_block(p, k_splits, kBK, xr);
  const GroupView& g = blk.g;
  if (g.skip) return;
  const int64_t k_begin = blk.k_begin, k_end = blk.k_end, m0 = blk.m0, n0 = blk.n0;
  const float* xrow = blk.xrow;
  const S* wrow = n0 + wr < p.N ? static_cast<const S*>(g.w) + (n0 + wr) * p.K : nullptr;

  const int wm = (warp % 2) * 32, wn = (warp / 2) * 32;
  float acc[2][4][4] = {};  // [m16 tile][n8 tile][fragment]
  float xv[8];
  alignas(16) uint16_t wv[16];
  load_x(xrow, k_begin + xk, p.K, vec_x, g.load_act, xv);
  load_w<T>(wrow, k_begin + wk, p.K, vec_w, wv);
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kBK) {
    // Stage this k-tile: x as three BF16 terms, the weights as BF16.
    alignas(16) uint16_t hi[8], mid[8], lo[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      hi[j] = bf16_bits(xv[j]);
      const float r1 = xv[j] - bf16_value(hi[j]);
      mid[j] = bf16_bits(r1);
      lo[j] = bf16_bits(r1 - bf16_value(mid[j]));
    }
    *reinterpret_cast<uint4*>(&xs[0][xr][xk]) = *reinterpret_cast<const uint4*>(hi);
    *reinterpret_cast<uint4*>(&xs[1][xr][xk]) = *reinterpret_cast<const uint4*>(mid);
    *reinterpret_cast<uint4*>(&xs[2][xr][xk]) = *reinterpret_cast<const uint4*>(lo);
    *reinterpret_cast<uint4*>(&ws[wr][wk]) = *reinterpret_cast<const uint4*>(wv);
    *reinterpret_cast<uint4*>(&ws[wr][wk + 8]) = *reinterpret_cast<const uint4*>(wv + 8);
    __syncthreads();
    if (k0 + kBK < k_end) {  // the next tile's loads overlap this tile's MMAs
      load_x(xrow, k0 + kBK + xk, p.K, vec_x, g.load_act, xv);
      load_w<T>(wrow, k0 + kBK + wk, p.K, vec_w, wv);
    }
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      uint32_t b[2][4];  // [pair of n8 tiles]: {b0, b1} of tile 2i, {b0, b1} of tile 2i+1
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        ldmatrix_x4(b[i], &ws[wn + 16 * i + (lane / 16) * 8 + lane % 8][kk + ((lane / 8) % 2) * 8]);
      }
#pragma unroll
      for (int t = 0; t < kTerms; ++t) {
        if (t > 0 && g.act_scale != 0.0f) break;  // W8A8: FP8 values, exact in the first term
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          uint32_t a[4];
          ldmatrix_x4(a, &xs[t][wm + 16 * mt + lane % 16][kk + (lane / 16) * 8]);
#pragma unroll
          for (int nt = 0; nt < 4; ++nt) mma_bf16(acc[mt][nt], a, b[nt / 2][(nt % 2) * 2], b[nt / 2][(nt % 2) * 2 + 1]);
        }
      }
    }
    __syncthreads();
  }
  float* partial = k_splits > 1 ? split_ws + static_cast<int64_t>(blockIdx.z) * p.M * p.N : nullptr;
  store_tile(p, acc, m0, n0, wm, wn, lane, g.scale, partial);
}

// W8A8 with FP8 weights: tc_kernel's grid, splits and warp tiles over k tiles of 64, the activations quantised to
// FP8 as they are staged (load_x_fp8, by the row group's load_act: 0 where x is already quantised) and both
// operands fed to m16n8k32 as bytes;
// the sums times g.scale = act_scale · weight_scale. Launch: K % 16 == 0, 16-byte aligned x rows and weights.
__global__ void __launch_bounds__(256, 2) tc_fp8_kernel(MatmulProblem p, int k_splits, float* split_ws) {
  __shared__ __align__(16) uint8_t xs[kBM][kRow8];
  __shared__ __align__(16) uint8_t ws[kBN][kRow8];
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  // Loader roles: x rows tid/4, 16 k each; weight rows tid/2, 32 k each (two 16-byte loads).
  const int xr = tid / 4, xk = (tid % 4) * 16, wr = tid / 2, wk = (tid % 2) * 32;
  const TileBlock blk = tile_block(p, k_splits, kBK8, xr);
  const GroupView& g = blk.g;
  if (g.skip) return;
  const int64_t k_begin = blk.k_begin, k_end = blk.k_end, m0 = blk.m0, n0 = blk.n0;
  const float* xrow = blk.xrow;
  const uint8_t* wrow = n0 + wr < p.N ? static_cast<const uint8_t*>(g.w) + (n0 + wr) * p.K : nullptr;

  const int wm = (warp % 2) * 32, wn = (warp / 2) * 32;
  float acc[2][4][4] = {};  // [m16 tile][n8 tile][fragment]
  uint4 xv = load_x_fp8(xrow, k_begin + xk, p.K, g.load_act);
  uint4 wv0 = load_w_fp8(wrow, k_begin + wk, p.K), wv1 = load_w_fp8(wrow, k_begin + wk + 16, p.K);
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kBK8) {
    *reinterpret_cast<uint4*>(&xs[xr][xk]) = xv;
    *reinterpret_cast<uint4*>(&ws[wr][wk]) = wv0;
    *reinterpret_cast<uint4*>(&ws[wr][wk + 16]) = wv1;
    __syncthreads();
    if (k0 + kBK8 < k_end) {  // the next tile's loads overlap this tile's MMAs
      xv = load_x_fp8(xrow, k0 + kBK8 + xk, p.K, g.load_act);
      wv0 = load_w_fp8(wrow, k0 + kBK8 + wk, p.K);
      wv1 = load_w_fp8(wrow, k0 + kBK8 + wk + 16, p.K);
    }
#pragma unroll
    for (int kk = 0; kk < kBK8; kk += 32) {
      uint32_t b[2][4];  // [pair of n8 tiles]: {b0, b1} of tile 2i, {b0, b1} of tile 2i+1
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        ldmatrix_x4(b[i], &ws[wn + 16 * i + (lane / 16) * 8 + lane % 8][kk + ((lane / 8) % 2) * 16]);
      }
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        uint32_t a[4];
        ldmatrix_x4(a, &xs[wm + 16 * mt + lane % 16][kk + (lane / 16) * 16]);
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) mma_fp8(acc[mt][nt], a, b[nt / 2][(nt % 2) * 2], b[nt / 2][(nt % 2) * 2 + 1]);
      }
    }
    __syncthreads();
  }
  float* partial = k_splits > 1 ? split_ws + static_cast<int64_t>(blockIdx.z) * p.M * p.N : nullptr;
  store_tile(p, acc, m0, n0, wm, wn, lane, g.scale, partial);
}

// y[m, n] = Σ_s partial_s[m, n] in split order, through the epilogue (row scatter, row scale, accumulate); grid
// (ceil(M·N / 256), problems).
__global__ void split_k_sum_kernel(MatmulProblem p, int k_splits, const float* split_ws) {
  const int problem = static_cast<int>(blockIdx.y);
  if (problem == 1) p.y = p.y2;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.M * p.N) return;
  const int64_t m = i / p.N, n = i % p.N;
  if (p.x_rows != nullptr && p.x_rows[m] < 0) return;
  const float* partial = split_ws + static_cast<int64_t>(problem) * k_splits * p.M * p.N + i;
  float v = 0.0f;
  for (int s = 0; s < k_splits; ++s) v += partial[static_cast<int64_t>(s) * p.M * p.N];
  store(p, m, n, v);
}

bool tc_enabled() {
  static const bool on = env_switch_on("QUATRE_CUDA_TC");
  return on;
}

std::atomic<int> g_fp8_test_mode{-1};  // set_tc_fp8_for_tests

// W8A8 problems tc_fp8_kernel takes: FP8 weights with an activation scale (grouped: expert 0's, which every
// expert shares), K % 16 == 0, 16-byte loads of x and of the weights. QUATRE_CUDA_TC_FP8=0 (read once) leaves them to
// tc_kernel, whose three-term path then takes the FP8 values of the activations (A/B timing).
bool fp8_kernel_applies(const MatmulProblem& p) {
  static const bool env_on = env_switch_on("QUATRE_CUDA_TC_FP8");
  const int mode = g_fp8_test_mode.load();
  if (!(mode < 0 ? env_on : mode != 0)) return false;
  if (p.weight.type != WType::kF8E4M3 || p.weight.act_scale == 0.0f || p.K % 16 != 0) return false;
  if (p.ldx % 4 != 0 || reinterpret_cast<uintptr_t>(p.x) % 16 != 0) return false;
  return p.experts != nullptr || (reinterpret_cast<uintptr_t>(p.weight.w) % 16 == 0 &&
                                  reinterpret_cast<uintptr_t>(p.weight2.w) % 16 == 0);
}

// K splits of a plain problem whose 64x128 tiles cover fewer than the 132 SMs of an H100/H200 (at batch 256 the
// router's 128 columns made 4 blocks, kv_a's 320 made 12: ~160-195 us a layer each): about two blocks an SM, each
// split at least 4 k tiles (of the kernel that runs it). QUATRE_CUDA_TC_SPLIT_K=0 (read once) turns the splits off.
int tc_k_splits(const MatmulProblem& p) {
  static const bool on = env_switch_on("QUATRE_CUDA_TC_SPLIT_K");
  if (!on || p.experts != nullptr) return 1;
  const int64_t tiles = static_cast<int64_t>(blocks_for(p.N, kBN)) * blocks_for(p.M, kBM) * (p.y2 != nullptr ? 2 : 1);
  if (tiles >= 132) return 1;
  const int64_t bk = fp8_kernel_applies(p) ? kBK8 : kBK;
  const int64_t k_tiles = (p.K + bk - 1) / bk;
  const int64_t splits = std::min<int64_t>({(2 * 132 + tiles - 1) / tiles, k_tiles / 4, kMaxKSplits});
  return static_cast<int>(std::max<int64_t>(1, splits));
}

// The partial tiles of `splits` splits (0 for one pass).
int64_t split_floats(const MatmulProblem& p, int splits) {
  return splits > 1 ? int64_t{splits} * (p.y2 != nullptr ? 2 : 1) * p.M * p.N : 0;
}

}  // namespace

void set_tc_fp8_for_tests(int mode) { g_fp8_test_mode.store(mode); }

int64_t matmul_tc_workspace_floats(const MatmulProblem& p) { return split_floats(p, tc_k_splits(p)); }

bool matmul_tc_applies(const MatmulProblem& p) {
  if (!tc_enabled() || (p.weight.type != WType::kBF16 && p.weight.type != WType::kF8E4M3)) return false;
  return p.experts == nullptr || p.rows_per_group % kBM == 0;
}

cudaError_t launch_matmul_tc(const MatmulProblem& p, cudaStream_t stream) {
  const bool vec_x = p.ldx % 4 == 0 && reinterpret_cast<uintptr_t>(p.x) % 16 == 0;
  const int problems = p.y2 != nullptr ? 2 : 1;
  // Split only into the caller's workspace (matmul_workspace_floats); without one, one pass.
  int k_splits = tc_k_splits(p);
  if (p.split_ws == nullptr || p.split_ws_floats < split_floats(p, k_splits)) k_splits = 1;
  const dim3 grid(blocks_for(p.N, kBN), blocks_for(p.M, kBM), static_cast<unsigned>(problems * k_splits));
  const bool aligned_w = p.experts != nullptr || (reinterpret_cast<uintptr_t>(p.weight.w) % 16 == 0 &&
                                                  reinterpret_cast<uintptr_t>(p.weight2.w) % 16 == 0);
  if (fp8_kernel_applies(p)) {
    tc_fp8_kernel<<<grid, 256, 0, stream>>>(p, k_splits, p.split_ws);
  } else if (p.weight.type == WType::kBF16) {
    const bool vec_w = p.K % 8 == 0 && aligned_w;
    tc_kernel<WType::kBF16><<<grid, 256, 0, stream>>>(p, vec_x, vec_w, k_splits, p.split_ws);
  } else if (p.weight.type == WType::kF8E4M3) {
    const bool vec_w = p.K % 16 == 0 && aligned_w;
    tc_kernel<WType::kF8E4M3><<<grid, 256, 0, stream>>>(p, vec_x, vec_w, k_splits, p.split_ws);
  } else {
    return cudaErrorInvalidValue;
  }
  if (k_splits > 1) {
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    const dim3 sum_grid(blocks_for(p.M * p.N, 256), static_cast<unsigned>(problems));
    split_k_sum_kernel<<<sum_grid, 256, 0, stream>>>(p, k_splits, p.split_ws);
  }
  return cudaGetLastError();
}

}  // namespace quatre::cuda
