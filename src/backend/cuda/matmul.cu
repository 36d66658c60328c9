// y = x · wᵀ against stored weights (F32/BF16/F16/FP8 and 4-bit, dequantised in registers), fp32 accumulation: a
// small-M kernel (memory-bound decode: every weight byte is read once, 16 bytes a load, 4 in flight a lane at one row,
// four lanes a column and eight columns a warp, several warps a column when N is small; 4-bit: 32 codes a load,
// ~0.52 bytes a weight with the G=128 scales), and for large M the tensor cores (matmul_tc.cu, BF16 and FP8
// weights) or a 64x64 shared-memory tile (every type, 4-bit included). All take the grouped (MoE) form of
// MatmulProblem. Depends on CUDA only.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "backend/cuda/matmul_common.cuh"

namespace quatre::cuda {
namespace {

constexpr int kSmallRows = 8;   // rows a group of the small kernel carries
constexpr int kQuad = 4;        // small kernel: lanes a column
constexpr int kUnroll = 4;      // small kernel: weight loads in flight a lane
constexpr int kTile = 64;       // tile kernel: BM = BN = 64
constexpr int kTileK = 16;

// small_m_kernel: grid (ceil(N / cols), groups, problems), 256 threads, cols = 8 · 8/WPC. Warp w holds the 8
// columns c = 8·(w / WPC) .. c + 8 of the block and the K slice s = w % WPC of WPC; lane l the column c + l/4 and
// the weights [k, k + VEC) for k = (s·4 + l%4 + j·4·WPC)·VEC, j = 0, 1, ...: the 4 lanes of a column read 4·VEC
// consecutive weights (64 bytes), and the 8 lanes of a warp with one l % 4 read the same activations (one load
// that 8 lanes share). A column's sum: over its 4 lanes (2 shuffles a present row), then over its WPC warps in
// shared memory, added in warp order (deterministic). WPC > 1 when N is too small to fill the GPU.
__host__ __device__ constexpr int small_block_cols(int wpc) { return 8 * 8 / wpc; }

// A 16-byte load of weights that stream through once: the read-only path, no L1 allocation, and the whole 256-byte
// L2 group of the line fetched from DRAM at once (the neighbouring weights are the next loads of the block's other
// warps or of this lane). H100, 16 FP8 layers: batch 1 3.22 -> 3.06 ms, batch 8 9.42 -> 8.62 (the routed experts'
// one-row groups), batch 64 unchanged; the same loads in the tensor-core kernel (matmul_small_tc.cu) cost its
// batch-64 MoE 4%, so it keeps __ldg.
__device__ __forceinline__ uint4 load_streaming16(const void* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];\n"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

// acc + x[0..4) · w, in order; kXVec: x 16-byte aligned, one load. kW8A8: x quantised on the load (act_q by act).
template <bool kXVec, bool kW8A8 = false>
__device__ __forceinline__ float fma4(const float* x, float4 w, float acc, float act = 0.0f) {
  float4 xv = kXVec ? *reinterpret_cast<const float4*>(x) : make_float4(x[0], x[1], x[2], x[3]);
  if constexpr (kW8A8) xv = act_q4(xv, act);
  acc = fmaf(xv.x, w.x, acc);
  acc = fmaf(xv.y, w.y, acc);
  acc = fmaf(xv.z, w.z, acc);
  return fmaf(xv.w, w.w, acc);
}

// A column's weights of float type T for small_m_kernel: VEC a load, kept as loaded (one 16-byte load, or one
// element when VEC == 1: unaligned data) and converted to fp32 four at a time at the FMAs. kW8A8: the activations
// quantised on their loads (act_q; a compile-time choice: at run time it cost every body registers).
template <WType T, int VEC, bool kW8A8 = false>
struct FloatColumn {
  using S = typename WTraits<T>::S;
  using Load = std::conditional_t<VEC == 1, S, uint4>;
  static constexpr int kVec = VEC;
  static_assert(VEC == 1 || VEC * sizeof(S) == 16);

  const S* w;  // [K]
  float act;   // kW8A8: the activations' scale (0: x already quantised)

  __device__ FloatColumn(const DevWeight& dw, int64_t n, int64_t K, bool x_quantized)
      : w(static_cast<const S*>(dw.w) + n * K), act(x_quantized || !kW8A8 ? 0.0f : dw.act_scale) {}

  __device__ Load load(int k) const {
    if constexpr (VEC == 1) {
      return w[k];
    } else {
      return load_streaming16(w + k);
    }
  }

  // acc[r] += x[r][k..k+VEC) · the loaded weights, for the rows r < n_rows (row 0 always; a uniform branch a row).
  template <int R>
  __device__ void fma(const Load& raw, const float* const (&x)[R], int n_rows, int k, float (&acc)[R]) const {
    if constexpr (VEC == 1) {
      const float wv = WTraits<T>::to_f32(raw);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (r == 0 || r < n_rows) acc[r] = fmaf(kW8A8 ? act_q(x[r][k], act) : x[r][k], wv, acc[r]);
      }
    } else {
#pragma unroll
      for (int c = 0; c < VEC / 4; ++c) {
        const float4 wv = four_weights<T>(raw, c);
#pragma unroll
        for (int r = 0; r < R; ++r) {  // activations in 16-byte loads (rows 16-byte aligned: checked at launch)
          if (r == 0 || r < n_rows) acc[r] = fma4<true, kW8A8>(x[r] + k + 4 * c, wv, acc[r], act);
        }
      }
    }
  }
};

// 4-bit weights (core/int4.h). A lane's 16-byte load holds the 32 codes of columns [k, k+32), all in one group
// (group sizes are multiples of 32, and a lane's k a multiple of 32). Symmetric: the codes become c - 8 (exact)
// and a row's 32 products are summed before the group's scale multiplies them (one multiply per 32 weights, not
// per weight); asymmetric: each weight is s * c + m rounded as core/int4.h rounds it. Either way within fp32
// summation-order error of the CPU backend.
constexpr int kInt4Vec = 32;

// A column's 4-bit weights for small_m_kernel: 32 codes a 16-byte load with their group's scale (and offset),
// decoded 8 at a time at the FMAs. kXVec: activations in 16-byte loads (else 4-byte ones: unaligned x).
template <bool kSymmetric, bool kXVec>
struct Int4Column {
  struct Load {
    uint4 codes;
    uint32_t scale_offset;  // the group's BF16 scale (low half) and offset (high half; 0 when symmetric)
  };
  static constexpr int kVec = kInt4Vec;

  const uint8_t* codes;     // [K/2]
  const uint16_t* scales;   // [K/G]
  const uint16_t* offsets;  // [K/G]; null when symmetric
  int group_size, group_shift;

  __device__ Int4Column(const DevWeight& dw, int64_t n, int64_t K, bool /*x_quantized: never W8A8*/)
      : codes(static_cast<const uint8_t*>(dw.w) + n * (K / 2)),
        scales(dw.int4_scales + n * (K / dw.group_size)),
        offsets(kSymmetric ? nullptr : dw.int4_offsets + n * (K / dw.group_size)),
        group_size(dw.group_size),
        group_shift(int4_group_shift(dw.group_size)) {}

  __device__ Load load(int k) const {
    const int64_t g = int4_group(k, group_size, group_shift);
    const uint32_t offset = kSymmetric ? 0u : __ldg(offsets + g);
    return {load_streaming16(codes + k / 2), __ldg(scales + g) | offset << 16};
  }

  // acc[r] += x[r][k..k+32) · (s ⊙ w) (symmetric: a sum, then one multiply) or · w (asymmetric), for the rows
  // r < n_rows (row 0 always; a uniform branch a row).
  template <int R>
  __device__ void fma(const Load& l, const float* const (&x)[R], int n_rows, int k, float (&acc)[R]) const {
    const float s = bf16_bits_to_f32(static_cast<uint16_t>(l.scale_offset));
    const float m = bf16_bits_to_f32(static_cast<uint16_t>(l.scale_offset >> 16));
    float sum[R];
#pragma unroll
    for (int r = 0; r < R; ++r) sum[r] = kSymmetric ? 0.0f : acc[r];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      float4 lo, hi;
      decode_int4_word<kSymmetric>(word(l.codes, q), s, m, lo, hi);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (r == 0 || r < n_rows) {
          sum[r] = fma4<kXVec>(x[r] + k + 8 * q, lo, sum[r]);
          sum[r] = fma4<kXVec>(x[r] + k + 8 * q + 4, hi, sum[r]);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = kSymmetric ? fmaf(s, sum[r], acc[r]) : sum[r];
  }
};

// The sums of column n (this lane's) over the present rows of `rows` (at most R of them; rows r >= their count
// are not computed), stored times the weight's scale. Everything is set up here, not in the kernel: values set
// before the kernel's branch on the row count would stay live through every body and spill.
template <class Column, int WPC, int R, bool kGated>
__device__ __forceinline__ void column_sums(MatmulProblem p, int rows_per_group, unsigned rows) {
  constexpr int kStride = WPC * kQuad * Column::kVec;  // k step of a lane
  select_problem(p);
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t n =
      static_cast<int64_t>(blockIdx.x) * small_block_cols(WPC) + (warp / WPC) * (32 / kQuad) + lane / kQuad;
  const int64_t group = blockIdx.y, m0 = group * rows_per_group;
  bool skip = false;
  // SiLU-gated (kGated: p.silu_gate, N = 2F): column n is column n / 2 of the gate weight (n even) or of the up weight
  // (weight2 / experts2; n odd), the two 4 lanes apart in the warp.
  const bool is_up = kGated && (n & 1) != 0;
  const DevWeight dw = group_dev_weight(pick(is_up, p.weight, p.weight2), is_up ? p.experts2 : p.experts,
                                        p.group_expert, group, skip);  // not a padding group: the kernel returned for those
  const int n_rows = __popc(rows);
  int row[R];         // in the group: the r-th present row (r >= n_rows: the first one's, never computed)
  const float* x[R];  // [K] each
  unsigned rest = rows;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    row[r] = __ffs(rest != 0 ? rest : rows) - 1;
    rest &= rest - 1;
    const int64_t m = m0 + row[r];
    x[r] = p.x + (p.x_rows != nullptr ? p.x_rows[m] : m) * p.ldx;
  }
  float acc[R] = {};
  if (n < p.N) {
    using Load = typename Column::Load;
    const Column col(dw, kGated ? n / 2 : n, p.K, p.x_quantized);
    const int K = static_cast<int>(p.K);
    // kUnroll loads in flight. One row: a trip sums kUnroll slots, each slot's load then replaced by the one
    // kUnroll strides on, in the same registers. (A window shifted by one each trip moves every pending load's
    // registers, and a move waits for its load: about one load in flight a lane. H100, 16 FP8 layers: batch 1
    // 2.98 -> 2.79 ms, batch 8 8.43 -> 7.90, the BF16 lm_head 2.62 -> 3.17 TB/s; the whole 4-bit model at batch 1
    // 7.51 -> 6.99 ms.) More rows keep the shifted window: unrolled, their bodies spilled 100-300 bytes under the
    // 80 registers of three blocks an SM (ptxas hoists the activation loads of later slots).
    int k = ((warp % WPC) * kQuad + lane % kQuad) * Column::kVec;
    Load raw[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) raw[u] = k + u * kStride < K ? col.load(k + u * kStride) : Load{};
    if constexpr (R == 1) {
#pragma unroll 1
      for (; k < K; k += kUnroll * kStride) {
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {  // slot u: its load's FMAs, then the load kUnroll strides on into it
          const int ku = k + u * kStride;
          if (ku >= K) break;
          col.fma(raw[u], x, n_rows, ku, acc);
          const int k_next = ku + kUnroll * kStride;
          raw[u] = k_next < K ? col.load(k_next) : Load{};
        }
      }
    } else {
#pragma unroll 1
      for (; k < K; k += kStride) {
        const Load cur = raw[0];
#pragma unroll
        for (int u = 0; u + 1 < kUnroll; ++u) raw[u] = raw[u + 1];
        const int k_next = k + kUnroll * kStride;
        raw[kUnroll - 1] = k_next < K ? col.load(k_next) : Load{};
        col.fma(cur, x, n_rows, k, acc);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {  // over the column's 4 lanes
    if (r >= n_rows) break;
    acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], 1);
    acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], 2);
  }
  const bool is_first_lane = lane % kQuad == 0;
  if constexpr (WPC > 1) {  // over the column's warps, in warp order
    __shared__ float partial[8][32 / kQuad][R];  // [warp][column of the warp][row]
    const int c = lane / kQuad;
    if (is_first_lane) {
#pragma unroll
      for (int r = 0; r < R; ++r) partial[warp][c][r] = acc[r];
    }
    __syncthreads();
    if (warp % WPC == 0) {  // the column's first warp adds them (the others' warp + j would pass the array)
#pragma unroll
      for (int r = 0; r < R; ++r) {
        acc[r] = 0;
#pragma unroll
        for (int j = 0; j < WPC; ++j) acc[r] += partial[warp + j][c][r];
      }
    }
    __syncthreads();  // before a next call writes partial again
  }
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] *= dw.scale;
  if constexpr (kGated) {  // the gate's lane takes the up sum from 4 lanes on (every lane shuffles)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float up = __shfl_down_sync(0xffffffffu, acc[r], kQuad);
      acc[r] = silu(acc[r]) * up;
    }
  }
  if (warp % WPC != 0 || !is_first_lane || n >= p.N || is_up) return;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (r < n_rows) store(p, m0 + row[r], kGated ? n / 2 : n, acc[r]);
  }
}

// Three blocks an SM (ptxas then gives 80 registers): more weight loads in flight a SM. kGated: SiLU-gated gate+up
// (launch_small), its own instantiation (a run-time flag cost the other bodies registers). Column: FloatColumn or
// Int4Column (the weights of the lane's column, as loaded, and the FMAs on them). One present row (every group
// at batch 1) has a body of its own; more are computed 4 at a time (5-8 rows: two passes over the weights, the
// second mostly from L2), rows past the present ones skipped by a uniform branch. (An 8-row body beside these
// spilled 50-360 bytes: ptxas allocates the bodies together.)
template <class Column, int WPC, bool kGated>
__global__ void __launch_bounds__(256, 3) small_m_kernel(MatmulProblem p, int rows_per_group) {
  const int64_t group = blockIdx.y;
  if (p.experts != nullptr && p.group_expert[group] < 0) return;  // a padding group: the whole block
  const unsigned rows = present_rows(p, group * rows_per_group, rows_per_group);
  if (__popc(rows) == 1) {
    column_sums<Column, WPC, 1, kGated>(p, rows_per_group, rows);
    return;
  }
  for (unsigned rest = rows; rest != 0;) {  // uniform over the block
    unsigned later = rest;
#pragma unroll
    for (int i = 0; i < 4; ++i) later &= later - 1;  // rest without its lowest 4 rows
    column_sums<Column, WPC, 4, kGated>(p, rows_per_group, rest & ~later);
    rest = later;
  }
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
      xs[lk + j][lr] = (xrow != nullptr && k < p.K) ? act_q(xrow[k], g.load_act) : 0.0f;
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

// Plain problems of 5-8 rows (decode batches of 5-8): every row in one pass over the weights, at two blocks an SM
// (room for the 8-row body's registers, which spilled under the three-blocks bound). small_m_kernel's 4-row passes
// would read the weights twice: from L2 for a layer's matrices, but from DRAM again for the 1 GB lm_head.
template <class Column, int WPC, bool kGated>
__global__ void __launch_bounds__(256, 2) small_m8_kernel(MatmulProblem p, int rows_per_group) {
  column_sums<Column, WPC, kSmallRows, kGated>(p, rows_per_group, present_rows(p, blockIdx.y * rows_per_group, rows_per_group));
}

template <class Column, int WPC>
void launch_small_wpc(const MatmulProblem& p, int rows_per_group, unsigned groups, cudaStream_t stream) {
  const dim3 grid(blocks_for(p.N, small_block_cols(WPC)), groups, p.y2 != nullptr ? 2 : 1);
  const bool m8 = p.experts == nullptr && p.M > 4;
  if (p.silu_gate) {
    m8 ? small_m8_kernel<Column, WPC, true><<<grid, 256, 0, stream>>>(p, rows_per_group)
       : small_m_kernel<Column, WPC, true><<<grid, 256, 0, stream>>>(p, rows_per_group);
  } else {
    m8 ? small_m8_kernel<Column, WPC, false><<<grid, 256, 0, stream>>>(p, rows_per_group)
       : small_m_kernel<Column, WPC, false><<<grid, 256, 0, stream>>>(p, rows_per_group);
  }
}

// Warps per column (K slices), for loads of `vec` weights. Grouped (MoE) problems: the fewest that give about 4
// blocks an SM of an H100/H200 (132 SMs), while every lane keeps at least two loads. Plain ones: the fewest that
// leave a lane at most 32 loads and give every SM a block (H100, batch 1: the BF16 lm_head 0.59 -> 0.44 ms with 4
// warps instead of 1, o_proj and the shared expert's gate+up ~10% faster with 4 than with 8). QUATRE_CUDA_SMALLM_WPC
// (1, 2, 4 or 8; read once) forces a count, for A/B runs.
int warps_per_column(const MatmulProblem& p, unsigned groups, int vec) {
  static const int forced = [] {
    const char* v = std::getenv("QUATRE_CUDA_SMALLM_WPC");
    const int w = v != nullptr ? std::atoi(v) : 0;
    return w == 1 || w == 2 || w == 4 || w == 8 ? w : 0;
  }();
  if (forced != 0) return forced;
  const auto blocks = [&](int wpc) {  // of one problem (the grid's x and y)
    return static_cast<int64_t>(blocks_for(p.N, small_block_cols(wpc))) * groups;
  };
  const int problems = p.y2 != nullptr ? 2 : 1;
  const bool plain = p.experts == nullptr;
  int wpc = 1;
  while (wpc < 8 && (plain ? p.K > int64_t{32} * wpc * kQuad * vec || blocks(wpc) * problems < 132
                           : blocks(wpc) < 4 * 132 && p.K >= 2 * wpc * kQuad * vec)) {
    wpc *= 2;
  }
  return wpc;
}

// SiLU-gated problems as one problem of 2N interleaved columns (gate, up) whose pairs meet in the store, on the K
// slices of the two-problem launch (y2, no gating): the same sums in the same order.
template <class Column>
void launch_small(const MatmulProblem& problem, int rows_per_group, cudaStream_t stream) {
  const auto groups = static_cast<unsigned>((problem.M + rows_per_group - 1) / rows_per_group);
  const int wpc = warps_per_column(problem, groups, Column::kVec);
  MatmulProblem p = problem;
  if (p.silu_gate) p.N *= 2, p.y2 = nullptr;  // silu_gate stays: the gated kernels
  switch (wpc) {
    case 1: launch_small_wpc<Column, 1>(p, rows_per_group, groups, stream); break;
    case 2: launch_small_wpc<Column, 2>(p, rows_per_group, groups, stream); break;
    case 4: launch_small_wpc<Column, 4>(p, rows_per_group, groups, stream); break;
    default: launch_small_wpc<Column, 8>(p, rows_per_group, groups, stream); break;
  }
}

template <WType T>
cudaError_t launch_small_float(const MatmulProblem& p, int rows_per_group, cudaStream_t stream) {
  using S = typename WTraits<T>::S;
  constexpr int kVec = 16 / sizeof(S);
  // 16-byte loads need every weight row 16-byte aligned (allocations are 256-byte aligned).
  const bool aligned = p.K % kVec == 0 && p.ldx % 4 == 0 && reinterpret_cast<uintptr_t>(p.x) % 16 == 0;
  const bool all_aligned = aligned && (p.experts != nullptr || (reinterpret_cast<uintptr_t>(p.weight.w) % 16 == 0 &&
                                                                reinterpret_cast<uintptr_t>(p.weight2.w) % 16 == 0));
  // W8A8 on every expert or on none (the host checks), quantised on the loads; x already quantised: the plain bodies.
  if constexpr (T == WType::kF8E4M3) {
    if (p.weight.act_scale > 0.0f && !p.x_quantized) {
      all_aligned ? launch_small<FloatColumn<T, kVec, true>>(p, rows_per_group, stream)
                  : launch_small<FloatColumn<T, 1, true>>(p, rows_per_group, stream);
      return cudaGetLastError();
    }
  }
  all_aligned ? launch_small<FloatColumn<T, kVec>>(p, rows_per_group, stream)
              : launch_small<FloatColumn<T, 1>>(p, rows_per_group, stream);
  return cudaGetLastError();
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
    const bool x_vec = p.ldx % 4 == 0 && reinterpret_cast<uintptr_t>(p.x) % 16 == 0;
    if (is_symmetric) {
      x_vec ? launch_small<Int4Column<true, true>>(p, rows_per_group, stream)
            : launch_small<Int4Column<true, false>>(p, rows_per_group, stream);
    } else {
      x_vec ? launch_small<Int4Column<false, true>>(p, rows_per_group, stream)
            : launch_small<Int4Column<false, false>>(p, rows_per_group, stream);
    }
    return cudaGetLastError();
  }
  const dim3 grid(blocks_for(p.N, kTile), blocks_for(p.M, kTile), p.y2 != nullptr ? 2 : 1);
  tile_kernel<WType::kInt4><<<grid, 256, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

namespace {

// The kernel launch_matmul runs a (well-formed) problem on.
enum class MatmulPath { kInt4, kSmallTc, kStaged, kSmall, kTcTile, kTile };

MatmulPath matmul_path(const MatmulProblem& p) {
  const bool grouped = p.experts != nullptr;
  const bool small = grouped ? p.rows_per_group <= kSmallRows : p.M <= kSmallRows;
  // Plain problems of up to 64 rows too, and 4-bit experts' wide groups with int8 activations (small_tc_applies says
  // which), in one pass over the weights. Both kernels check a 4-bit layout themselves; launch_int4 refuses a bad one.
  if (small_tc_applies(p)) return MatmulPath::kSmallTc;
  if (small && staged_applies(p)) return MatmulPath::kStaged;
  if (p.weight.type == WType::kInt4) return MatmulPath::kInt4;
  if (small) return MatmulPath::kSmall;
  return matmul_tc_applies(p) ? MatmulPath::kTcTile : MatmulPath::kTile;
}

}  // namespace

namespace {
std::atomic<int> g_prequantize_mode{-1};
}  // namespace

bool prequantize_enabled() {
  static const bool env_on = env_switch_on("QUATRE_CUDA_PREQUANT");
  return switch_on(g_prequantize_mode.load(), env_on);
}

// From 2 rows (QUATRE_CUDA_PREQUANT_MIN_ROWS, read once: A/B timing): H100, 16 FP8 layers, decode batch 8 7.47 ->
// 7.30 ms against 16 rows; one row stays on the staged kernel's own quantisation (a launch more would cost more).
int64_t prequantize_min_rows() {
  static const int64_t rows = [] {
    const int64_t r = env_int("QUATRE_CUDA_PREQUANT_MIN_ROWS", 2);
    return r >= 1 ? r : int64_t{2};
  }();
  return rows;
}

void set_prequantize_for_tests(int mode) { g_prequantize_mode.store(mode); }

bool matmul_gates_in_store(const MatmulProblem& p) {
  const MatmulPath path = matmul_path(p);
  const bool small = p.experts != nullptr ? p.rows_per_group <= kSmallRows : p.M <= kSmallRows;
  return path == MatmulPath::kSmall || path == MatmulPath::kStaged || (path == MatmulPath::kInt4 && small);
}

bool matmul_takes_terms(const MatmulProblem& p) {
  return p.M > 0 && p.N > 0 && matmul_path(p) == MatmulPath::kSmallTc && small_tc_takes_terms(p);
}

bool matmul_takes_q8(const MatmulProblem& p) {
  return p.M > 0 && p.N > 0 && matmul_path(p) == MatmulPath::kSmallTc && small_tc_takes_q8(p);
}

int64_t matmul_workspace_floats(const MatmulProblem& p) {
  if (p.M == 0 || p.N == 0 || matmul_path(p) != MatmulPath::kTcTile) return 0;
  return matmul_tc_workspace_floats(p);
}

cudaError_t launch_matmul(const MatmulProblem& p, cudaStream_t stream) {
  if (p.M == 0 || p.N == 0) return cudaSuccess;
  const bool grouped = p.experts != nullptr;
  const bool small = grouped ? p.rows_per_group <= kSmallRows : p.M <= kSmallRows;
  if (grouped && !small && p.rows_per_group != kTile) return cudaErrorInvalidValue;
  if (small && p.K > INT32_MAX / 2) return cudaErrorInvalidValue;  // the small kernel's k is an int
  const int rows_per_group = grouped ? p.rows_per_group : kSmallRows;
  // W8A8: one quantised input for both problems of a launch (gate and up share their scale: text_weights.h).
  if (p.y2 != nullptr && p.experts == nullptr && p.weight.act_scale != p.weight2.act_scale) return cudaErrorInvalidValue;
  const MatmulPath path = matmul_path(p);
  if (p.silu_gate) {
    if (p.y2 == nullptr || p.accumulate || p.y_rows != nullptr || p.row_scale != nullptr) return cudaErrorInvalidValue;
    // The FMA and staged kernels gate in their store (a small 4-bit problem on the int4 path runs on the FMA one).
    if (!matmul_gates_in_store(p)) {  // gate into y, up into y2, then the gating over y as one array
      if (p.ldy != p.N) return cudaErrorInvalidValue;
      MatmulProblem both = p;
      both.silu_gate = false;
      const cudaError_t e = launch_matmul(both, stream);
      return e != cudaSuccess ? e : launch_silu_mul(p.y, p.y2, p.M * p.N, stream);
    }
  }
  switch (path) {
    case MatmulPath::kInt4: return launch_int4(p, grouped, small, stream);
    case MatmulPath::kSmallTc: return launch_small_tc(p, rows_per_group, stream);
    case MatmulPath::kStaged: return launch_staged(p, rows_per_group, stream);
    case MatmulPath::kTcTile: return launch_matmul_tc(p, stream);
    case MatmulPath::kSmall:
    case MatmulPath::kTile: break;
  }
  return dispatch_wtype(p.weight.type, [&](auto tag) -> cudaError_t {
    constexpr WType T = decltype(tag)::value;
    if (small) return launch_small_float<T>(p, rows_per_group, stream);
    const dim3 grid(blocks_for(p.N, kTile), blocks_for(p.M, kTile), p.y2 != nullptr ? 2 : 1);
    tile_kernel<T><<<grid, 256, 0, stream>>>(p);
    return cudaGetLastError();
  });
}

}  // namespace quatre::cuda
