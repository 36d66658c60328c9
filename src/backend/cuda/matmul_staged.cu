// y = x · wᵀ for groups of few rows (decode at batch 1: one-row plain problems and the routed experts' one-row
// groups) with FP8, BF16 or 4-bit weights whose rows are 512, 1024, 2048 or 4096 bytes (FP8 and BF16: 8192 too,
// opt-in below), through shared memory: each thread of a block issues every 16-byte piece of the block's weight tile
// it will multiply (8 by default: 32 KB a block) as cp.async copies at once (4-bit: with each piece's scale, and
// offset), then waits once. The FMA kernel of matmul.cu holds its loads in registers, 4 a lane in flight (48 KB an
// SM at three blocks); here ~160 KB an SM are in flight, and a block reads each weight row as one contiguous run. A
// thread keeps one 16-byte piece of the same k range of several rows, so it multiplies the same activations with each
// (loaded once a row of x); the row sums then go over the warp (shuffles) and over the row's warps in shared memory,
// in a fixed order (deterministic).
// SiLU-gated problems (p.silu_gate) run as 2N interleaved columns (gate, up) whose two sums meet in the final store.
// Launched as a dependent (pdl.cuh: QUATRE_CUDA_PDL=1), a plain problem's copies are issued while the kernel before it
// still runs. QUATRE_CUDA_STAGED=0 (read once) turns the kernel off (the FMA kernel then runs: A/B timing);
// QUATRE_CUDA_STAGED_PIECES (4, 8 or 16) changes the tile; QUATRE_CUDA_STAGED_STREAM=2 or 3 runs the streamed form
// (as many blocks as stay resident, each walking tiles with 2 or 3 tiles' copies in flight);
// QUATRE_CUDA_STAGED_LONG_ROWS=1 takes FP8 and BF16 rows of 8192 bytes too. Depends on CUDA only.
#include <algorithm>
#include <atomic>
#include <cstdlib>

#include "backend/cuda/env_switch.h"
#include "backend/cuda/matmul_common.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/q8.cuh"

namespace quatre::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kPiece = 16;  // bytes a copy
constexpr int kDefaultPieces = 8;

// Copies 16 bytes global -> shared without registers (cp.async, L1 bypassed, the line's 256-byte L2 group fetched
// at once); !valid writes zeros and reads nothing.
__device__ __forceinline__ void copy16_async(void* dst, const void* src, bool valid) {
  const auto d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? kPiece : 0)
               : "memory");
}

// Weights a 16-byte piece holds: 16 FP8, 8 BF16, 32 4-bit codes (one group's: group sizes are multiples of 32).
template <WType T>
constexpr int kPieceElems = T == WType::kInt4 ? 32 : kPiece / static_cast<int>(sizeof(typename WTraits<T>::S));

// Σ x[c] · w[c] over a piece's weights, in order (x: this thread's activations). 4-bit: scale_offset holds the
// group's BF16 scale (low half) and offset (high; asymmetric); symmetric codes sum as c - 8 and the sum takes the
// scale once, asymmetric ones are each s·c + m, rounded as core/int4.h rounds them (as the FMA kernel does).
template <WType T, bool kAsym>
__device__ __forceinline__ float piece_dot(const uint4& raw, uint32_t scale_offset, const float (&x)[kPieceElems<T>]) {
  float acc = 0.0f;
  if constexpr (T == WType::kInt4) {
    const float s = bf16_bits_to_f32(static_cast<uint16_t>(scale_offset));
    const float m = bf16_bits_to_f32(static_cast<uint16_t>(scale_offset >> 16));
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      float4 lo, hi;
      decode_int4_word<!kAsym>(word(raw, q), s, m, lo, hi);
      const float v[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
      for (int e = 0; e < 8; ++e) acc = fmaf(x[8 * q + e], v[e], acc);
    }
    return kAsym ? acc : s * acc;
  } else {
#pragma unroll
    for (int c = 0; c < kPieceElems<T> / 4; ++c) {
      const float4 w = four_weights<T>(raw, c);
      acc = fmaf(x[4 * c], w.x, acc);
      acc = fmaf(x[4 * c + 1], w.y, acc);
      acc = fmaf(x[4 * c + 2], w.z, acc);
      acc = fmaf(x[4 * c + 3], w.w, acc);
    }
    return acc;
  }
}

// dp4a with unsigned bytes a (4-bit codes, one a byte) and signed bytes b (int8 activations): c + Σ a[i]·b[i].
__device__ __forceinline__ int dot4_u8_s8(uint32_t a, uint32_t b, int c) {
  int d;
  asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

// A thread's 32 activations of a row (one piece's k range) as int8 (QUATRE_CUDA_INT4_ACT=q8: llama.cpp's Q8
// activations), core/int4.h's round_q8_blocks: q = x / d rounded to nearest even, d = max |x| / 127 over the block of
// kQ8Block = 128 k the piece lies in, the pieces of lanes 4j .. 4j+3 (a row's consecutive pieces: two shuffles); d
// NaN where an x is NaN, infinite where one is (it reaches the sum); q = 0 below kQ8MinBlockMax.
// even[w] / odd[w]: the bytes of k = 8w + 0, 2, 4, 6 / 8w + 1, 3, 5, 7, as the codes of word w pair with them
// (piece_dot_q8); sum: Σ q of the piece (the symmetric codes' -8, the asymmetric offsets).
struct Q8Slice {
  uint32_t even[4], odd[4];
  int sum;
  float d;
};

static_assert(quatre::kQ8Block == 4 * 32, "a q8 block: the pieces of 4 lanes");
__device__ __forceinline__ Q8Slice quantize_q8(const float (&x)[32]) {
  float amax = 0.0f;
#pragma unroll
  for (int j = 0; j < 32; ++j) amax = max_nan(amax, fabsf(x[j]));
  amax = max_nan(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
  amax = max_nan(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
  Q8Slice s;
  s.d = q8_step(amax);
  const float inv = q8_inverse_step(amax);
  const auto byte_of = [&](int j) { return q8_code_bits(x[j], inv); };
  const auto pack = [&](int j) {  // the bytes of k = j, j + 2, j + 4, j + 6
    return __byte_perm(__byte_perm(byte_of(j), byte_of(j + 2), 0x0040), __byte_perm(byte_of(j + 4), byte_of(j + 6), 0x0040),
                       0x5410);
  };
  s.sum = 0;
#pragma unroll
  for (int w = 0; w < 4; ++w) {
    s.even[w] = pack(8 * w), s.odd[w] = pack(8 * w + 1);
    s.sum = __dp4a(static_cast<int>(s.even[w]), 0x01010101, __dp4a(static_cast<int>(s.odd[w]), 0x01010101, s.sum));
  }
  return s;
}

// A 4-bit piece's sum against int8 activations: the codes' integer products (dp4a, exact), then d·s·(Σ c·q - 8·Σ q)
// (symmetric) or d·(s·Σ c·q + m·Σ q) (asymmetric); scale_offset as piece_dot's.
template <bool kAsym>
__device__ __forceinline__ float piece_dot_q8(const uint4& raw, uint32_t scale_offset, const Q8Slice& x) {
  int dot = 0;
#pragma unroll
  for (int w = 0; w < 4; ++w) {
    const uint32_t codes = word(raw, w);
    dot = dot4_u8_s8(codes & 0x0F0F0F0Fu, x.even[w], dot);
    dot = dot4_u8_s8((codes >> 4) & 0x0F0F0F0Fu, x.odd[w], dot);
  }
  const float s = bf16_bits_to_f32(static_cast<uint16_t>(scale_offset));
  if constexpr (kAsym) {
    const float m = bf16_bits_to_f32(static_cast<uint16_t>(scale_offset >> 16));
    return x.d * fmaf(s, static_cast<float>(dot), m * static_cast<float>(x.sum));
  }
  return x.d * (s * static_cast<float>(dot - 8 * x.sum));
}

// Copies the aligned 4 bytes holding a 16-bit value at src (two neighbouring 4-bit scales or offsets) into dst.
__device__ __forceinline__ void copy4_async(void* dst, const uint16_t* src, bool valid) {
  const auto d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  const auto* word_at = reinterpret_cast<const uint16_t*>(reinterpret_cast<uintptr_t>(src) & ~uintptr_t{3});
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(word_at), "r"(valid ? 4 : 0) : "memory");
}

// Closes this thread's group of copies issued since the last one.
__device__ __forceinline__ void commit_copies() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

// Waits until at most kPending of this thread's newest groups of copies are in flight (which only this thread reads:
// no barrier).
template <int kPending>
__device__ __forceinline__ void wait_copies() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// Waits for all of this thread's copies.
__device__ __forceinline__ void wait_own_copies() {
  commit_copies();
  wait_copies<0>();
}

// A tile: P·256 pieces of P·256 / R weight rows, R = 2^row_shift pieces a row (32..512); N' = N, or 2N interleaved
// (gate, up) columns when kGated. Piece i of thread t is piece (i·256 + t) % R of tile row (i·256 + t) / R (kept at
// tile[i][t]: consecutive threads, consecutive 16 bytes): for R <= 256 piece t % R of row i·(256 / R) + t / R; for
// R = 512 (kPasses = 2, float weights: rows of 8192 bytes) piece (i % 2)·256 + t of row i / 2. Every 32 lanes of a
// warp hold one row's pieces, so a row's sum is its lanes' (a shuffle tree) and then its R / 32 lane groups', in
// order.
struct TileSmem {
  uint4* pieces;          // [P][kThreads]
  uint32_t* scale_words;  // 4-bit: [P][kThreads] words holding each piece's group scale
  uint32_t* offset_words; // asymmetric 4-bit: the same for the offsets
};

// Issues this thread's copies of the tile of rows n0.. of group `group` (gate and up: the group's weights).
template <WType T, bool kAsym, int P, bool kGated, int kPasses>
__device__ __forceinline__ void copy_tile(const MatmulProblem& p, const DevWeight& gate, const DevWeight& up,
                                          int64_t n0, int row_shift, const TileSmem& smem) {
  static_assert(kPasses == 1 || (kPasses == 2 && T != WType::kInt4), "rows of 512 pieces: float weights");
  constexpr int kElems = kPieceElems<T>;
  const int t = static_cast<int>(threadIdx.x);
  const int rows_a_pass = kThreads >> row_shift, first_piece = t & ((1 << row_shift) - 1);
  const int64_t row_bytes = int64_t{kPiece} << row_shift;
  // 4-bit: the group of this thread's pieces in a row (every expert has weight's group size); its scale is one half
  // of a copied 4-byte word (rows hold an even number of groups: staged_applies checks).
  const int64_t n_groups = T == WType::kInt4 ? p.K / p.weight.group_size : 0;
  const int piece_group = T == WType::kInt4 ? first_piece * kElems / p.weight.group_size : 0;
#pragma unroll
  for (int i = 0; i < P; ++i) {
    const int piece = kPasses == 1 ? first_piece : (i % kPasses) * kThreads + t;
    const int64_t n = n0 + (kPasses == 1 ? i * rows_a_pass + (t >> row_shift) : i / kPasses);
    const bool is_up = kGated && (n & 1) != 0, valid = n < p.N;
    const int64_t row = valid ? (kGated ? n / 2 : n) : 0;
    // (Fields selected one by one: a reference to up or gate put both on the stack.)
    const auto* codes = static_cast<const char*>(is_up ? up.w : gate.w);
    copy16_async(&smem.pieces[i * kThreads + t], codes + row * row_bytes + piece * kPiece, valid);
    if constexpr (T == WType::kInt4) {
      const uint16_t* scales = is_up ? up.int4_scales : gate.int4_scales;
      copy4_async(&smem.scale_words[i * kThreads + t], scales + row * n_groups + piece_group, valid);
      if constexpr (kAsym) {
        const uint16_t* offsets = is_up ? up.int4_offsets : gate.int4_offsets;
        copy4_async(&smem.offset_words[i * kThreads + t], offsets + row * n_groups + piece_group, valid);
      }
    }
  }
}

// Multiplies the copied tile of rows n0.. by each present row of group `group` and stores the outputs; wait() makes
// this thread's copies of the tile land (everything else it reads is loaded before: H100, 16 FP8 layers, batch 1,
// 2.70 ms against 2.90 with the group's rows read after it). lane_group_sums: [P·kThreads / 32].
template <WType T, bool kAsym, int P, bool kGated, bool kQ8, int kPasses, typename Wait>
__device__ __forceinline__ void multiply_tile(const MatmulProblem& p, const DevWeight& gate, const DevWeight& up,
                                              int64_t group, int64_t n0, int rows_per_group, int row_shift,
                                              const TileSmem& smem, float* lane_group_sums, Wait wait) {
  constexpr bool kInt4 = T == WType::kInt4;
  constexpr int kElems = kPieceElems<T>;
  const int t = static_cast<int>(threadIdx.x), lane = t % 32, warp = t / 32;
  const int tile_rows = (P * kThreads) >> row_shift, piece = t & ((1 << row_shift) - 1);  // piece: of pass 0
  const int half_shift = kInt4 ? 16 * ((piece * kElems / p.weight.group_size) & 1) : 0;
  const unsigned rows = present_rows(p, group * rows_per_group, rows_per_group);
  const int64_t first_x_row = rows == 0 ? 0 : group * rows_per_group + __ffs(rows) - 1;
  const int64_t first_x = p.x_rows != nullptr ? p.x_rows[first_x_row] : first_x_row;
  wait();
  const int groups_a_row = 1 << (row_shift - 5);  // lane groups of 32 pieces a weight row
  for (unsigned rest = rows; rest != 0; rest &= rest - 1) {  // uniform over the block
    const int64_t m = group * rows_per_group + __ffs(rest) - 1;
    const int64_t x_row = rest == rows ? first_x : p.x_rows != nullptr ? p.x_rows[m] : m;
    float x[kPasses][kElems];  // the activations of the thread's piece in each pass of a row
#pragma unroll
    for (int j = 0; j < kPasses; ++j) {
      const float4* xv = reinterpret_cast<const float4*>(p.x + x_row * p.ldx +
                                                         static_cast<int64_t>(piece + j * kThreads) * kElems);
#pragma unroll
      for (int c = 0; c < kElems / 4; ++c) {
        // W8A8: gate and up share the scale (cuda_backend_moe.cpp)
        const float4 v = act_q4(xv[c], load_act(p, gate.act_scale));
        x[j][4 * c] = v.x, x[j][4 * c + 1] = v.y, x[j][4 * c + 2] = v.z, x[j][4 * c + 3] = v.w;
      }
    }
    [[maybe_unused]] Q8Slice xq;
    if constexpr (kQ8) xq = quantize_q8(x[0]);
#pragma unroll
    for (int i = 0; i < P; ++i) {
      uint32_t scale_offset = 0;
      if constexpr (kInt4) {
        scale_offset = (smem.scale_words[i * kThreads + t] >> half_shift) & 0xFFFFu;
        if constexpr (kAsym) scale_offset |= (smem.offset_words[i * kThreads + t] >> half_shift) << 16;
      }
      float acc;
      if constexpr (kQ8) {
        acc = piece_dot_q8<kAsym>(smem.pieces[i * kThreads + t], scale_offset, xq);
      } else {
        acc = piece_dot<T, kAsym>(smem.pieces[i * kThreads + t], scale_offset, x[i % kPasses]);
      }
#pragma unroll
      for (int d = 16; d >= 1; d /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, d);
      if (lane == 0) lane_group_sums[i * (kThreads / 32) + warp] = acc;  // lane group (i·256 + t) / 32
    }
    __syncthreads();
    // Output column j of the tile: the sum of tile row j (or of rows 2j and 2j + 1, gate and up).
    const int outputs = kGated ? tile_rows / 2 : tile_rows;
    if (t < outputs) {
      const auto row_sum = [&](int r) {
        float s = 0.0f;
        for (int g = r * groups_a_row; g < (r + 1) * groups_a_row; ++g) s += lane_group_sums[g];
        return s;
      };
      if constexpr (kGated) {
        const int64_t n = n0 / 2 + t;
        if (n < p.N / 2) store(p, m, n, silu(row_sum(2 * t) * gate.scale) * (row_sum(2 * t + 1) * up.scale));
      } else {
        const int64_t n = n0 + t;
        if (n < p.N) store(p, m, n, row_sum(t) * gate.scale);
      }
    }
    __syncthreads();  // before the next row writes lane_group_sums again
  }
}

// The 4-bit tile's scale and offset words follow its pieces in the dynamic shared memory (stages tiles of them).
template <WType T, bool kAsym, int P>
__device__ __forceinline__ TileSmem tile_smem(uint4* dynamic, int stage, int stages) {
  uint32_t* const words = reinterpret_cast<uint32_t*>(dynamic + stages * P * kThreads);
  return {.pieces = dynamic + stage * P * kThreads,
          .scale_words = words + stage * P * kThreads,
          .offset_words = words + (stages + stage) * P * kThreads};
}

// Dynamic shared memory of `stages` tiles: their pieces, and 4-bit: as many scale (and offset) words.
template <WType T, bool kAsym, int P>
constexpr int tile_bytes(int stages) {
  return stages * P * kThreads * (kPiece + (T == WType::kInt4 ? 4 : 0) + (kAsym ? 4 : 0));
}

// grid (ceil(N' / tile rows), groups, problems), a block a tile. A plain problem's weights are copied before the
// wait for the kernel ahead (pdl.cuh); an expert's too when the grouping was written two launches back
// (grouping_ready), else only after the wait (the routing ahead writes it).
template <WType T, bool kAsym, int P, bool kGated, bool kQ8, int kPasses>
__global__ void __launch_bounds__(kThreads, kQ8 ? 4 : 3)
    staged_kernel(MatmulProblem p, int rows_per_group, int row_shift) {
  static_assert(!kQ8 || T == WType::kInt4, "int8 activations are for 4-bit weights");
  extern __shared__ uint4 tile[];
  __shared__ float lane_group_sums[P * kThreads / 32];
  select_problem(p);
  const int64_t group = blockIdx.y;
  const bool plain = p.experts == nullptr, early = plain || p.grouping_ready;
  if (!early) pdl_wait();
  if (!plain && __ldcg(p.group_expert + group) < 0) {  // a padding group: the whole block
    if (early) pdl_wait();  // every block waits before it ends
    return;
  }
  bool skip = false;
  const DevWeight gate = group_dev_weight(p.weight, p.experts, p.group_expert, group, skip);
  const DevWeight up = kGated ? group_dev_weight(p.weight2, p.experts2, p.group_expert, group, skip) : gate;
  const TileSmem smem = tile_smem<T, kAsym, P>(tile, 0, 1);
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * ((P * kThreads) >> row_shift);
  copy_tile<T, kAsym, P, kGated, kPasses>(p, gate, up, n0, row_shift, smem);
  if (early) pdl_wait();
  pdl_allow_dependents();
  multiply_tile<T, kAsym, P, kGated, kQ8, kPasses>(p, gate, up, group, n0, rows_per_group, row_shift, smem,
                                                   lane_group_sums, [] { wait_own_copies(); });
}

// The streamed form (QUATRE_CUDA_STAGED_STREAM=2 or 3: its stages): as many blocks as stay resident, block b taking
// tiles b, b + gridDim.x, ... (tile k: problem k / (groups · row_tiles), group k / row_tiles % groups, row tile
// k % row_tiles) with kStages tiles' copies in flight, so the next tiles' weights arrive while this one is multiplied
// and no second wave of blocks waits behind the first (the staged grid of batch 1's gate+up for four 4-bit experts
// is 1024 blocks, ~2 waves of one load then one multiply each). A tile's arithmetic is staged_kernel's (same bits).
template <WType T, bool kAsym, int P, bool kGated, bool kQ8, int kStages, int kPasses>
__global__ void __launch_bounds__(kThreads, 2) streamed_kernel(MatmulProblem p0, int rows_per_group, int row_shift,
                                                              int64_t row_tiles, int64_t groups, int64_t n_tiles) {
  static_assert(!kQ8 || T == WType::kInt4, "int8 activations are for 4-bit weights");
  extern __shared__ uint4 tiles[];
  __shared__ float lane_group_sums[P * kThreads / 32];
  const bool early = p0.experts == nullptr || p0.grouping_ready;
  if (!early) pdl_wait();
  const int64_t tile_rows = (P * kThreads) >> row_shift;
  // Tile k's problem (the second one's fields where k is past the first's tiles), group, first row and weights.
  struct Tile {
    MatmulProblem p;
    int64_t group, n0;
    DevWeight gate, up;
    bool skip;
  };
  const auto locate = [&](int64_t k) {
    Tile at{.p = p0};
    if (k / (groups * row_tiles) == 1) at.p.weight = p0.weight2, at.p.experts = p0.experts2, at.p.y = p0.y2;
    at.group = k / row_tiles % groups;
    at.n0 = k % row_tiles * tile_rows;
    at.gate = group_dev_weight(at.p.weight, at.p.experts, at.p.group_expert, at.group, at.skip);
    at.up = kGated ? group_dev_weight(at.p.weight2, at.p.experts2, at.p.group_expert, at.group, at.skip) : at.gate;
    return at;
  };
  // One commit group a tile (empty past the last or for a padding group): wait_group counts tiles.
  const auto copy = [&](int64_t k, int stage) {
    if (k < n_tiles) {
      const Tile at = locate(k);
      const TileSmem smem = tile_smem<T, kAsym, P>(tiles, stage, kStages);
      if (!at.skip) copy_tile<T, kAsym, P, kGated, kPasses>(at.p, at.gate, at.up, at.n0, row_shift, smem);
    }
    commit_copies();
  };
  const int64_t first = blockIdx.x, stride = gridDim.x;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) copy(first + s * stride, s);
  if (early) pdl_wait();
  pdl_allow_dependents();
  int stage = 0;
  for (int64_t k = first; k < n_tiles; k += stride, stage = stage + 1 == kStages ? 0 : stage + 1) {
    // The tile kStages - 1 ahead into the stage the last one used (its readers passed multiply_tile's barriers).
    copy(k + (kStages - 1) * stride, stage == 0 ? kStages - 1 : stage - 1);
    const Tile at = locate(k);
    if (at.skip) continue;  // uniform over the block
    multiply_tile<T, kAsym, P, kGated, kQ8, kPasses>(at.p, at.gate, at.up, at.group, at.n0, rows_per_group,
                                                     row_shift, tile_smem<T, kAsym, P>(tiles, stage, kStages),
                                                     lane_group_sums, [] { wait_copies<kStages - 1>(); });
  }
  wait_copies<0>();  // no copy outlives the block (every group is committed)
}

std::atomic<int> g_test_mode{-1};    // set_staged_for_tests
std::atomic<int> g_test_pieces{0};
std::atomic<int> g_test_stream{-1};
std::atomic<int> g_test_stream_blocks{0};
std::atomic<int> g_test_long_rows{-1};

bool env_enabled() {
  static const bool on = env_switch_on("QUATRE_CUDA_STAGED");
  return on;
}

int forced_pieces() {
  if (const int n = g_test_pieces.load(); n != 0) return n;
  static const int pieces = [] {
    const char* v = std::getenv("QUATRE_CUDA_STAGED_PIECES");
    const int n = v != nullptr ? std::atoi(v) : 0;
    return n == 4 || n == 8 || n == 16 ? n : 0;
  }();
  return pieces;
}

// The streamed form's stages (2: of 8 pieces, 3: of 4), or 0: the staged grid. QUATRE_CUDA_STAGED_STREAM (read once;
// off until measured).
int streamed_stages() {
  const auto valid = [](int n) { return n == 2 || n == 3 ? n : 0; };
  if (const int n = g_test_stream.load(); n >= 0) return valid(n);
  static const int stages = valid(static_cast<int>(env_int("QUATRE_CUDA_STAGED_STREAM", 0)));
  return stages;
}

// Rows of 8192 bytes (512 pieces, two passes of a block's threads) for FP8 and BF16 weights: the BF16 lm_head and
// router, a BF16 checkpoint's experts. QUATRE_CUDA_STAGED_LONG_ROWS=1 (read once; off until measured: they run on the
// FMA kernel).
bool long_rows_enabled() {
  static const bool env_on = env_int("QUATRE_CUDA_STAGED_LONG_ROWS", 0) == 1;
  return switch_on(g_test_long_rows.load(), env_on);
}

// log2 of the 16-byte pieces of a weight row when that is 32..256 (rows of 512..4096 bytes), or 512 for FP8 and BF16
// rows where long rows are on; else -1.
int row_shift(const MatmulProblem& p) {
  const WType t = p.weight.type;
  if (t != WType::kF8E4M3 && t != WType::kBF16 && t != WType::kInt4) return -1;
  const int64_t row_bytes = t == WType::kInt4 ? p.K / 2 : t == WType::kF8E4M3 ? p.K : 2 * p.K;
  const int64_t pieces = row_bytes / kPiece;
  if (row_bytes % kPiece != 0) return -1;
  const int last = t != WType::kInt4 && long_rows_enabled() ? 9 : 8;
  for (int s = 5; s <= last; ++s) {
    if (pieces == int64_t{1} << s) return s;
  }
  return -1;
}

// Passes of a block's threads over a weight row: 1 for rows of <= 256 pieces, 2 for 512.
constexpr int passes_of(int shift) { return shift > 8 ? 2 : 1; }

template <WType T, bool kAsym, int P, bool kGated, int kPasses>
cudaError_t launch_pieces(const MatmulProblem& p, int rows_per_group, unsigned groups, int shift, cudaStream_t stream) {
  const auto kernel = T == WType::kInt4 && int4_q8_activations()
                          ? staged_kernel<T, kAsym, P, kGated, T == WType::kInt4, kPasses>
                          : staged_kernel<T, kAsym, P, kGated, false, kPasses>;
  const int bytes = tile_bytes<T, kAsym, P>(1);
  // The dynamic shared memory allowed, on the current device, at every launch: with the kernel's static 32·P bytes a
  // tile of exactly 48 KB (4-bit asymmetric, 8 pieces) already needs it.
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e != cudaSuccess) return e;
  const dim3 grid(blocks_for(p.N, (P * kThreads) >> shift), groups, !kGated && p.y2 != nullptr ? 2 : 1);
  return launch_dependent(kernel, grid, kThreads, bytes, stream, p, rows_per_group, shift);
}

// Blocks of `kernel` (kThreads, `bytes` of dynamic shared memory) resident at once on the current device.
template <typename Kernel>
cudaError_t resident_blocks(Kernel kernel, int bytes, int64_t& blocks) {
  int device = 0, sms = 0, per_sm = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, bytes);
  blocks = int64_t{sms} * per_sm;
  return e != cudaSuccess ? e : blocks > 0 ? cudaSuccess : cudaErrorInvalidConfiguration;
}

template <WType T, bool kAsym, int P, int kStages, bool kGated, int kPasses>
cudaError_t launch_streamed(const MatmulProblem& p, int rows_per_group, unsigned groups, int shift,
                            cudaStream_t stream) {
  const auto kernel = T == WType::kInt4 && int4_q8_activations()
                          ? streamed_kernel<T, kAsym, P, kGated, T == WType::kInt4, kStages, kPasses>
                          : streamed_kernel<T, kAsym, P, kGated, false, kStages, kPasses>;
  const int bytes = tile_bytes<T, kAsym, P>(kStages);
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  // Resident blocks, found once a kernel (any count is correct: no block waits on another; this one keeps every
  // block busy to the end); tests may cap it so that each block walks many tiles.
  static std::atomic<int64_t> found[2] = {0, 0};
  std::atomic<int64_t>& cached = found[kernel == streamed_kernel<T, kAsym, P, kGated, false, kStages, kPasses> ? 0 : 1];
  int64_t resident = cached.load();
  if (e == cudaSuccess && resident == 0 && (e = resident_blocks(kernel, bytes, resident)) == cudaSuccess) {
    cached.store(resident);
  }
  if (e != cudaSuccess) return e;
  if (const int cap = g_test_stream_blocks.load(); cap > 0) resident = std::min<int64_t>(resident, cap);
  const int64_t row_tiles = blocks_for(p.N, (P * kThreads) >> shift);
  const int64_t n_tiles = row_tiles * groups * (!kGated && p.y2 != nullptr ? 2 : 1);
  const auto grid = static_cast<unsigned>(std::min(n_tiles, resident));
  return launch_dependent(kernel, dim3(grid), kThreads, bytes, stream, p, rows_per_group, shift, row_tiles,
                          static_cast<int64_t>(groups), n_tiles);
}

template <WType T, bool kAsym, bool kGated, int kPasses>
cudaError_t launch_typed(const MatmulProblem& p, int rows_per_group, int shift, cudaStream_t stream) {
  const auto groups = static_cast<unsigned>((p.M + rows_per_group - 1) / rows_per_group);
  switch (streamed_stages()) {  // the streamed form: two stages of 8 pieces, or three of 4
    case 2: return launch_streamed<T, kAsym, 8, 2, kGated, kPasses>(p, rows_per_group, groups, shift, stream);
    case 3: return launch_streamed<T, kAsym, 4, 3, kGated, kPasses>(p, rows_per_group, groups, shift, stream);
    default: break;
  }
  // 8 pieces a thread (32 KB tiles) unless forced: H100, 16 FP8 layers, context 2048, batch 1: 2.70 ms against 2.77 at
  // 4 and 2.91 at 16 (halved for matrices that would leave an SM fewer than two blocks).
  const int forced = forced_pieces();
  switch (forced != 0 ? forced : kDefaultPieces) {
    case 16: return launch_pieces<T, kAsym, 16, kGated, kPasses>(p, rows_per_group, groups, shift, stream);
    case 8: return launch_pieces<T, kAsym, 8, kGated, kPasses>(p, rows_per_group, groups, shift, stream);
    default: return launch_pieces<T, kAsym, 4, kGated, kPasses>(p, rows_per_group, groups, shift, stream);
  }
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

void set_staged_for_tests(int mode, int pieces, int stream, int stream_blocks) {
  g_test_mode.store(mode);
  g_test_pieces.store(pieces == 4 || pieces == 8 || pieces == 16 ? pieces : 0);
  g_test_stream.store(stream);
  g_test_stream_blocks.store(stream_blocks);
}

void set_staged_long_rows_for_tests(int mode) { g_test_long_rows.store(mode); }

bool staged_applies(const MatmulProblem& p) {
  const int mode = g_test_mode.load();
  if (mode == 0 || (mode < 0 && !env_enabled())) return false;
  if (row_shift(p) < 0 || p.ldx % 4 != 0 || !aligned16(p.x)) return false;
  if (p.weight.type == WType::kInt4) {  // whole groups of 32-code pieces, an even number a row (4-byte scale copies)
    const int G = p.weight.group_size;
    if (G <= 0 || G % kInt4GroupMultiple != 0 || p.K % G != 0 || (p.K / G) % 2 != 0) return false;
    // A piece's scale is the half of its 4-byte word given by its group's parity: 4-byte aligned arrays (experts:
    // 256-byte aligned allocations).
    const auto aligned4 = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 4 == 0; };
    const auto scales_aligned = [&](const DevWeight& w) { return aligned4(w.int4_scales) && aligned4(w.int4_offsets); };
    if (p.experts == nullptr && (!scales_aligned(p.weight) || (p.y2 != nullptr && !scales_aligned(p.weight2)))) {
      return false;
    }
  }
  // Plain weights 16-byte aligned (experts: 256-byte aligned allocations, rows a multiple of 16 bytes).
  return p.experts != nullptr || (aligned16(p.weight.w) && (p.y2 == nullptr || aligned16(p.weight2.w)));
}

cudaError_t launch_staged(const MatmulProblem& problem, int rows_per_group, cudaStream_t stream) {
  const int shift = row_shift(problem);
  if (shift < 0 || rows_per_group < 1 || rows_per_group > 32) return cudaErrorInvalidValue;
  MatmulProblem p = problem;
  if (p.silu_gate) p.N *= 2;  // the interleaved (gate, up) columns; y2 is scratch the gated kernel leaves alone
  const auto launch = [&]<bool kGated>() {
    switch (p.weight.type) {
      case WType::kF8E4M3:
        return passes_of(shift) == 2 ? launch_typed<WType::kF8E4M3, false, kGated, 2>(p, rows_per_group, shift, stream)
                                     : launch_typed<WType::kF8E4M3, false, kGated, 1>(p, rows_per_group, shift, stream);
      case WType::kBF16:
        return passes_of(shift) == 2 ? launch_typed<WType::kBF16, false, kGated, 2>(p, rows_per_group, shift, stream)
                                     : launch_typed<WType::kBF16, false, kGated, 1>(p, rows_per_group, shift, stream);
      default:  // (4-bit rows: at most 256 pieces, row_shift)
        return p.weight.int4_offsets == nullptr
                   ? launch_typed<WType::kInt4, false, kGated, 1>(p, rows_per_group, shift, stream)
                   : launch_typed<WType::kInt4, true, kGated, 1>(p, rows_per_group, shift, stream);
    }
  };
  return p.silu_gate ? launch.template operator()<true>() : launch.template operator()<false>();
}

}  // namespace quatre::cuda
