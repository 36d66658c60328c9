// y = x · wᵀ on the tensor cores for small groups (2-8 rows: decode batches, MoE expert groups; plain problems of
// up to 64 rows, 32 by default: plain_max_rows) with BF16, FP8 or 4-bit weights, "swap AB": the weights are mma.sync's A operand (16 output
// columns x 16 k), a block of <= 8 rows its B operand (16 k x 8 rows; absent rows are zeros), so one m16n8k16 does
// 16 x 8 x 16 multiply-adds that the FMA kernel of matmul.cu issues one by one. A plain problem of 9-64 rows runs
// as one group of 2, 4 or 8 row blocks: each weight fragment, loaded once, is multiplied against every row block, so
// the weights stream from memory once for all rows. As in matmul_tc.cu, fp32 activations are split into three BF16 terms
// (hi + mid + lo) multiplied against the same weights (FP8 E4M3 and BF16 are exact in BF16), so the result matches
// fp32 arithmetic up to summation order. The weights go from global memory straight into registers (16-byte loads,
// no shared memory), each thread given a permuted set of k so that its loads are contiguous. 4-bit weights (see
// Int4Chunk) multiply their codes, exact in BF16, and apply each group's scale (and offset) after the mma; with x
// quantised to int8 (x_q8) as u8 codes times s8 activations, and then a prompt's expert groups of 64 rows run on 8 row
// blocks, their x staged in shared memory a chunk at a time (wide_q8_chunks). Where it runs and the A/B switches:
// small_tc_policy.cpp. Depends on CUDA only.
#include <type_traits>

#include "backend/cuda/matmul_common.cuh"
#include "backend/cuda/q8.cuh"

namespace quatre::cuda {
namespace {

constexpr int kRows = kSmallTcRows;                  // B's columns: the rows of a row block
constexpr int kMaxRowBlocks = kSmallTcMaxRowBlocks;  // plain problems: up to 64 rows in one pass; a wide group
constexpr int kChunk = 64;       // k a warp covers per step: 4 mmas of 16
constexpr int kWarps = 8;        // a block: kWarps / WPC column warps x WPC k slices
constexpr int kInFlight = 2;     // chunks of loads in flight a thread

// Fragments of mma.m16n8k16 (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"), lane =
// 4g + t: A (16x16, row-major) a0,a1 = (row g, cols 2t, 2t+1), a2,a3 = (g+8, 2t..), a4,a5 = (g, 2t+8, 2t+9),
// a6,a7 = (g+8, 2t+8..), two bf16 a register: {a0a1, a2a3, a4a5, a6a7}; B (16x8, column-major) b0,b1 = (k 2t, 2t+1,
// col g), b2,b3 = (k 2t+8, 2t+9, col g); C (16x8 fp32) c0,c1 = (row g, cols 2t, 2t+1), c2,c3 = (row g+8, ..).
// A thread's four k slots of an mma, {2t, 2t+1, 2t+8, 2t+9}, stand for four consecutive k of its own (a dot
// product's order is free, and A and B use the same map): mma j (0..3) of a chunk at `base` takes
//   FP8:  k = base + 16t + 4j + {0,1,2,3}                   (one 16-byte load of a weight row feeds the 4 mmas)
//   BF16: k = base + 32(j/2) + 8t + 4(j%2) + {0,1,2,3}      (two 16-byte loads a row, each 64 bytes a quad)
template <WType T>
__device__ __forceinline__ int slot_k(int t, int j) {
  if constexpr (T == WType::kF8E4M3) return 16 * t + 4 * j;
  return 32 * (j / 2) + 8 * t + 4 * (j % 2);
}

// The 16-byte weight loads of a row per chunk.
template <WType T>
constexpr int kLoadsPerRow = T == WType::kF8E4M3 ? 1 : 2;

// One chunk of a thread's weights as loaded: rows g and g+8 of each of its CT 16-column tiles. (The activations
// are loaded when the chunk is multiplied: from L1/L2, shared by the block's column warps; held in flight they
// spilled.)
template <WType T, int CT>
struct Chunk {
  uint4 w[CT][2][kLoadsPerRow<T>];  // [tile][row g, g+8][load]
};

// A's registers {a0a1, a2a3, a4a5, a6a7} of mma j from the loads of rows g (r0) and g+8 (r1): the weights at
// slot_k(t, j) + {0,1} and + {2,3}.
template <WType T>
__device__ __forceinline__ void a_fragment(const uint4 (&r0)[kLoadsPerRow<T>], const uint4 (&r1)[kLoadsPerRow<T>],
                                           int j, uint32_t (&a)[4]) {
  if constexpr (T == WType::kF8E4M3) {  // word j = the 4 weights of mma j
    const uint32_t w0 = word(r0[0], j), w1 = word(r1[0], j);
    a[0] = fp8x2_to_bf16x2(w0), a[1] = fp8x2_to_bf16x2(w1);
    a[2] = fp8x2_to_bf16x2(w0 >> 16), a[3] = fp8x2_to_bf16x2(w1 >> 16);
  } else {  // load j/2, words 2(j%2) and 2(j%2)+1
    a[0] = word(r0[j / 2], 2 * (j % 2)), a[1] = word(r1[j / 2], 2 * (j % 2));
    a[2] = word(r0[j / 2], 2 * (j % 2) + 1), a[3] = word(r1[j / 2], 2 * (j % 2) + 1);
  }
}

// How a kernel takes x (a compile-time choice: at run time, in the loops below, it changed the W8A16 bodies'
// register allocation and left the routed experts at batch 64 ~30% slower on an H100): kSplit: fp32 values as
// three BF16 terms (W8A16; also W8A8 inputs quantised beforehand, whose lower terms are zeros); kQuantise: W8A8,
// act_q on each load, one term (FP8 values are exact in BF16); kFp8: W8A8 with x already quantised, one term;
// kTerms: the three terms made once (MatmulProblem::x_terms; 4-bit weights, one row block); kTerms1: x rounded to
// BF16 made once, one plane (x_term_planes 1: BF16 activations, one mma a block); kQ8: x quantised to int8 made once
// (MatmulProblem::x_q8; 4-bit weights, one row block, chunks of one weight group: multiply_q8).
enum class XMode : int { kSplit, kQuantise, kFp8, kTerms, kTerms1, kQ8 };
template <XMode kX>
constexpr int kTermsOf = kX == XMode::kSplit || kX == XMode::kTerms ? 3 : 1;
template <XMode kX>
constexpr bool kMadeTerms = kX == XMode::kTerms || kX == XMode::kTerms1;  // x_terms read, x not
template <XMode kX>
constexpr bool kOneRowBlock = kMadeTerms<kX> || kX == XMode::kQ8;  // activations made once: one row block

// A thread's activations: rows g, g + 8, ... of the RB row blocks (x_blocks bit rb: row 8rb + g is present; absent
// rows read as zeros).
struct Activations {
  const float* x;  // [K] of row g of row block 0 (of the group)
  int x_step;      // x of row block rb: x + rb · x_step (plain problems; one row block otherwise)
  unsigned x_blocks;
  int K;
  float load_act;  // W8A8: what act_q divides the loads by, the activation scale (0: x already quantised)
  const uint16_t* terms;  // kMadeTerms: row g's N BF16 planes [N][K] (one row block)
  const uint8_t* q8;      // kQ8, one row block: row g's K int8 values (x_q8)
  // kQ8, one row block: the {d, Σ q} blocks of rows 2t and 2t + 1 (C's columns), null when absent.
  const float* q8_meta[2];
  // kQ8, a wide group: the chunk's x_q8 rows staged in shared memory (wide_stage: kWideRowBytes apart) and their
  // {d, Σ q} of the chunk's block.
  const uint8_t* staged;
  const float2* staged_meta;
  int live_blocks;  // row blocks up to the last with a present row (the others' products are zeros: skipped)

  // x[row 8rb + g][k .. k+4) (zeros past K or for an absent row), kQuantise: quantised (act_q, by load_act).
  // Ordered: a volatile load, kept in program order among the mmas (else the compiler hoists all of a chunk's
  // activation loads of every row block, and spills).
  template <bool kOrdered, XMode kX = XMode::kSplit>
  __device__ float4 load(int k, int rb) const {
    if (((x_blocks >> rb) & 1u) == 0 || k >= K) return make_float4(0, 0, 0, 0);
    const float* at = x + (rb * x_step + k);
    float4 v;
    if constexpr (!kOrdered) {
      v = *reinterpret_cast<const float4*>(at);
    } else {
      asm volatile("ld.global.v4.f32 {%0,%1,%2,%3}, [%4];\n" : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "l"(at));
    }
    if constexpr (kX == XMode::kQuantise) v = act_q4(v, load_act);
    return v;
  }

  // kQ8, one row block: B registers {b0}, {b1} of m16n8k32 at plane position k (8 bytes: k {0, 2, 4, 6} and {1, 3,
  // 5, 7} of the octet; zeros past K or for an absent row), a volatile load in program order as load<true>.
  __device__ uint2 load_q8(int k) const {
    if ((x_blocks & 1u) == 0 || k >= K) return make_uint2(0, 0);
    uint2 v;
    asm volatile("ld.global.v2.u32 {%0,%1}, [%2];\n" : "=r"(v.x), "=r"(v.y) : "l"(q8 + k));
    return v;
  }

  // kMadeTerms: B registers {b0b1}, {b2b3} of each of the N terms at plane positions k .. k+4 of row g (their k
  // interleaved as launch_split_terms stores them; zeros past K or for an absent row), as split_bf16<N> would make
  // them; volatile loads, in program order as load<true>.
  template <int N>
  __device__ void load_terms(int k, uint32_t (&b0)[3], uint32_t (&b1)[3]) const {
#pragma unroll
    for (int i = 0; i < N; ++i) b0[i] = 0, b1[i] = 0;
    if ((x_blocks & 1u) == 0 || k >= K) return;
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const uint16_t* at = terms + (static_cast<int64_t>(i) * K + k);
      asm volatile("ld.global.v2.u32 {%0,%1}, [%2];\n" : "=r"(b0[i]), "=r"(b1[i]) : "l"(at));
    }
  }
};

// A thread's view of a BF16/FP8 problem: its weight rows (null past N) and its activations.
template <WType T, int CT>
struct Operands {
  using S = typename WTraits<T>::S;
  const S* w[CT][2];  // rows n0 + 16c + g and + 8
  Activations x;
  int t, K;

  __device__ Chunk<T, CT> load(int base) const {
    Chunk<T, CT> c;
#pragma unroll
    for (int ct = 0; ct < CT; ++ct) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
#pragma unroll
        for (int l = 0; l < kLoadsPerRow<T>; ++l) {
          // BF16: load l holds mmas 2l, 2l+1; FP8: one load. K % 16 (FP8) / % 8 (BF16) == 0: a load lies wholly
          // in or past K.
          const int k = base + slot_k<T>(t, 2 * l);
          c.w[ct][h][l] = w[ct][h] != nullptr && k < K ? __ldg(reinterpret_cast<const uint4*>(w[ct][h] + k))
                                                       : make_uint4(0, 0, 0, 0);
        }
      }
    }
    return c;
  }
};

// acc[rb][ct] += the chunk at `base` times row block rb: per mma j, A from the chunk (converted once for all row
// blocks), the activations split into 3 terms, 3 mmas a column tile (XMode kQuantise, kFp8: FP8 values, exact in
// the first term, 1 mma). Each accumulator sees mma j, then term, in order. Several row blocks: the activations of
// step (j, rb) load during the mmas of the step before.
template <int RB, XMode kX, WType T, int CT>
__device__ __forceinline__ void multiply(const Chunk<T, CT>& c, const Operands<T, CT>& op, int base,
                                         float (&acc)[RB][CT][4]) {
  constexpr bool kOrdered = RB > 1;
  constexpr int kTerms = kTermsOf<kX>;
  float4 next = op.x.template load<kOrdered, kX>(base + slot_k<T>(op.t, 0), 0);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    uint32_t a[CT][4];
#pragma unroll
    for (int ct = 0; ct < CT; ++ct) a_fragment<T>(c.w[ct][0], c.w[ct][1], j, a[ct]);
#pragma unroll
    for (int rb = 0; rb < RB; ++rb) {
      const float4 x = next;
      const int step = j * RB + rb + 1;  // the next step's (j, rb)
      if (step < 4 * RB) next = op.x.template load<kOrdered, kX>(base + slot_k<T>(op.t, step / RB), step % RB);
      uint32_t b0[3], b1[3];  // [term]: B registers {b0b1}, {b2b3} = x at slot_k + {0,1}, + {2,3}
      split3(x.x, x.y, b0);
      split3(x.z, x.w, b1);
#pragma unroll
      for (int ct = 0; ct < CT; ++ct) {
#pragma unroll
        for (int term = 0; term < kTerms; ++term) mma_bf16(acc[rb][ct], a[ct], b0[term], b1[term]);
      }
    }
  }
}

// 4-bit weights (core/int4.h). A chunk is 128 k: four blocks of 32, quad thread b loading block b (k = base + 32b,
// one 16-byte load: 32 codes of one group, as G % 32 == 0) of its rows g and g+8, with the block's scale (and
// offset). An mma must lie in one group (the group's scale multiplies its sum after the mma), so mma (b, h), b =
// 0..3, h = 0, 1, takes block b only: thread t's slots {2t, 2t+1, 2t+8, 2t+9} stand for
//   k = base + 32b + 8(t^b) + {2h, 2h+4, 2h+1, 2h+5}   (codes of word t^b of thread b's load, nibbles in that order)
// and a 4x4 transpose of words over the quad (quad_words) hands each thread its words. That order makes a slot
// pair two nibbles 16 bits apart, (2h, 2h+4) and (2h+1, 2h+5): one mask and OR turn them into BF16 (int4_pairs).
// Activations made once (x_terms) are stored in that order (launch_split_terms); loaded ones are picked so. The mma
// multiplies codes (c - 8 symmetric, c asymmetric: exact in BF16) into a fresh fragment per block; then acc += s ·
// partial with the row's own s (C rows g, g+8), and asymmetric + m · Σx (Σx of the block by an mma with A = ones).
// Rounding differs from the CPU's per weight fl(s·c + m) · x by a few fp32 ulps of the block's terms s·Σcx and m·Σx.
constexpr int kInt4Chunk = 128;
// A wide group's x in shared memory: a chunk's rows kWideRowBytes apart (8 words past a multiple of the 32 banks: a
// half-warp's 8-byte B loads, rows g = 0..3 at words 8g + 2(t^b) + {0, 1}, take every bank once), kWideStages chunks
// in flight (cp.async).
constexpr int kWideRowBytes = kInt4Chunk + 32;
constexpr int kWideStages = 3;

// Where thread t's 8 k of block b start (h = 0), or its slots of mma (b, h) in a plane of x_terms (4h on: the
// plane's octets hold k {0, 4, 1, 5, 2, 6, 3, 7}).
__device__ __forceinline__ int int4_slot_k(int t, int b, int h) { return 32 * b + 8 * (t ^ b) + 4 * h; }

template <int CT>
struct Int4Chunk {
  uint4 codes[CT][2];            // [tile][row g, g+8]: block t's 32 codes
  uint32_t scale_offset[CT][2];  // block t's BF16 scale (low half) and offset (high half; 0 when symmetric)
};

// A thread's view of a 4-bit problem: row n0 + 16ct + 8h + g at codes + (16ct + 8h) · code_stride (valid bit
// 2ct + h: n < N), its scales and offsets likewise with n_groups a row.
template <int CT, bool kOffsets>
struct Int4Operands {
  const uint8_t* codes;      // [K/2] of row n0 + g
  const uint16_t* scales;    // [K/G] of row n0 + g
  const uint16_t* offsets;   // [K/G] of row n0 + g; unused when symmetric
  int64_t code_stride, n_groups;
  unsigned valid;
  uint32_t group_size;
  int group_shift;  // log2(group_size) when a power of two (a shift for the division), else -1
  Activations x;
  int t, K;

  __device__ Int4Chunk<CT> load(int base) const {
    Int4Chunk<CT> c;
    const int k = base + 32 * t;  // K % 32 == 0: the block lies wholly in or past K
    const int64_t group = k >= K ? 0 : group_shift >= 0 ? k >> group_shift : static_cast<uint32_t>(k) / group_size;
#pragma unroll
    for (int ct = 0; ct < CT; ++ct) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = 16 * ct + 8 * h;
        const bool in = ((valid >> (2 * ct + h)) & 1u) != 0 && k < K;
        c.codes[ct][h] = in ? __ldg(reinterpret_cast<const uint4*>(codes + row * code_stride + k / 2))
                            : make_uint4(0, 0, 0, 0);
        uint32_t so = in ? __ldg(scales + row * n_groups + group) : 0u;
        if constexpr (kOffsets) so |= (in ? static_cast<uint32_t>(__ldg(offsets + row * n_groups + group)) : 0u) << 16;
        c.scale_offset[ct][h] = so;
      }
    }
    return c;
  }
};

// out[b] = word t^b of quad thread b's load: round r brings word r from thread t^r (block t^r), then out[b] = that
// of round b^t (two conditional swaps).
__device__ __forceinline__ void quad_words(const uint4& own, int t, uint32_t (&out)[4]) {
  uint32_t r0 = own.x, r1 = __shfl_xor_sync(0xffffffffu, own.y, 1);
  uint32_t r2 = __shfl_xor_sync(0xffffffffu, own.z, 2), r3 = __shfl_xor_sync(0xffffffffu, own.w, 3);
  const bool odd = (t & 1) != 0, high = (t & 2) != 0;
  const uint32_t s0 = odd ? r1 : r0, s1 = odd ? r0 : r1, s2 = odd ? r3 : r2, s3 = odd ? r2 : r3;
  out[0] = high ? s2 : s0, out[1] = high ? s3 : s1, out[2] = high ? s0 : s2, out[3] = high ? s1 : s3;
}

// Codes (2h, 2h+4) and (2h+1, 2h+5) of a word (k order, code i in nibble i: column 2j in the low nibble of byte j)
// as two packed BF16 pairs, minus 8 (symmetric) or not: 0x4300 | c is the BF16 value 128 + c (a mask and an OR, one
// LOP3 a pair), and the subtraction is exact.
template <bool kOffsets>
__device__ __forceinline__ void int4_pairs(uint32_t word, int h, uint32_t& lo, uint32_t& hi) {
  const uint32_t q = word >> (8 * h);
  const __nv_bfloat162 bias = kOffsets ? __floats2bfloat162_rn(128.0f, 128.0f) : __floats2bfloat162_rn(136.0f, 136.0f);
  const uint32_t v0 = (q & 0x000F000Fu) | 0x43004300u, v1 = ((q >> 4) & 0x000F000Fu) | 0x43004300u;
  const __nv_bfloat162 d0 = __hsub2(*reinterpret_cast<const __nv_bfloat162*>(&v0), bias);
  const __nv_bfloat162 d1 = __hsub2(*reinterpret_cast<const __nv_bfloat162*>(&v1), bias);
  lo = *reinterpret_cast<const uint32_t*>(&d0), hi = *reinterpret_cast<const uint32_t*>(&d1);
}

// acc[ct][e] += the int32 sums part[ct][e] of C's column 2t + i (e % 2 == i) scaled: s·d·(Σ c·q − 8·Σ q), or
// s·d·Σ c·q + m·d·Σ q (kOffsets), with x's block {d, Σ q} = m8 and the thread's row g / g+8 scale (and offset).
template <bool kOffsets, int CT>
__device__ __forceinline__ void scale_q8(const int (&part)[CT][4], const Int4Chunk<CT>& c, float2 m8, int i,
                                         float (&acc)[CT][4]) {
#pragma unroll
  for (int ct = 0; ct < CT; ++ct) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {  // c[2h + i]: weight row g + 8h
      const int e = 2 * h + i;
      const uint32_t so = c.scale_offset[ct][h];
      const float wide = q8_widened(part[ct][e]);  // kQ8Round + Σ c·q
      const float sd = __uint_as_float(so << 16) * m8.x;
      if constexpr (kOffsets) {
        const float v = fmaf(sd, wide - kQ8Round, acc[ct][e]);
        acc[ct][e] = fmaf(__uint_as_float(so & 0xFFFF0000u) * m8.x, m8.y, v);
      } else {
        acc[ct][e] = fmaf(sd, wide - fmaf(8.0f, m8.y, kQ8Round), acc[ct][e]);
      }
    }
  }
}

// Codes (k 0, 2, 4, 6) and (1, 3, 5, 7) of block b's word of rows g and g+8 as m16n8k32's A (unsigned bytes): one
// mask each.
template <int CT>
__device__ __forceinline__ void q8_codes(const uint32_t (&words)[CT][2][4], int b, uint32_t (&a)[CT][4]) {
#pragma unroll
  for (int ct = 0; ct < CT; ++ct) {
    a[ct][0] = words[ct][0][b] & 0x0F0F0F0Fu, a[ct][1] = words[ct][1][b] & 0x0F0F0F0Fu;
    a[ct][2] = (words[ct][0][b] >> 4) & 0x0F0F0F0Fu, a[ct][3] = (words[ct][1][b] >> 4) & 0x0F0F0F0Fu;
  }
}

// acc[rb][ct] += the 4-bit chunk at `base` times row block rb of x quantised to int8 (XMode::kQ8; G % kQ8Block == 0,
// so the chunk's 128 k are one weight group and one q8 block of each row of x): block b's codes of rows g and g+8
// (word t^b, as the BF16 body's) go in as unsigned bytes, the even nibbles (k 0, 2, 4, 6 of the word) one register and
// the odd ones another (q8_codes), decoded once for every row block; x's bytes are stored in that order
// (launch_quantize_q8), so one 8-byte load gives a block's B: one row block from global memory (the next block's
// during the mmas), a wide group's from the chunk's stage in shared memory (row blocks from live_blocks on, with no
// present row, skipped). Four m16n8k32 mmas a row block sum Σ c·q exactly in int32 over the chunk; then each sum
// meets its scales once (scale_q8), with d, Σ q the chunk's block of x rows 8rb + 2t, + 1.
template <int RB, bool kOffsets, int CT>
__device__ __forceinline__ void multiply_q8(const Int4Chunk<CT>& c, const Int4Operands<CT, kOffsets>& op, int base,
                                            float (&acc)[RB][CT][4]) {
  if (base >= op.K) return;  // a chunk past K (the loop's last in flight): nothing to add, no block of x to read
  uint32_t words[CT][2][4];  // [tile][row g, g+8][block]
#pragma unroll
  for (int ct = 0; ct < CT; ++ct) {
#pragma unroll
    for (int r = 0; r < 2; ++r) quad_words(c.codes[ct][r], op.t, words[ct][r]);
  }
  int part[RB][CT][4] = {};
  if constexpr (RB == 1) {
    float2 meta[2];  // x rows 2t, 2t+1: {d, Σ q} of this chunk's block (loaded first: read after the mmas)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      meta[i] = op.x.q8_meta[i] != nullptr ? __ldg(reinterpret_cast<const float2*>(op.x.q8_meta[i]) + base / kQ8Block)
                                           : make_float2(0.0f, 0.0f);
    }
    uint2 next = op.x.load_q8(base + int4_slot_k(op.t, 0, 0));
#pragma unroll
    for (int b = 0; b < 4; ++b) {
      const uint2 xb = next;
      if (b < 3) next = op.x.load_q8(base + int4_slot_k(op.t, b + 1, 0));
      uint32_t a[CT][4];
      q8_codes(words, b, a);
#pragma unroll
      for (int ct = 0; ct < CT; ++ct) mma_u8s8(part[0][ct], a[ct], xb.x, xb.y);
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) scale_q8<kOffsets>(part[0], c, meta[i], i, acc[0]);
  } else {
    const int live = op.x.live_blocks;
    const int g = static_cast<int>(threadIdx.x % 32) / 4;
#pragma unroll
    for (int b = 0; b < 4; ++b) {
      uint32_t a[CT][4];
      q8_codes(words, b, a);
#pragma unroll
      for (int rb = 0; rb < RB; ++rb) {
        if (rb >= live) break;  // uniform over the block
        const uint2 xb = *reinterpret_cast<const uint2*>(op.x.staged + (kRows * rb + g) * kWideRowBytes +
                                                         int4_slot_k(op.t, b, 0));
#pragma unroll
        for (int ct = 0; ct < CT; ++ct) mma_u8s8(part[rb][ct], a[ct], xb.x, xb.y);
      }
    }
#pragma unroll
    for (int rb = 0; rb < RB; ++rb) {
      if (rb >= live) break;
      const float2* meta = op.x.staged_meta + kRows * rb + 2 * op.t;  // rows 8rb + 2t, + 1
#pragma unroll
      for (int i = 0; i < 2; ++i) scale_q8<kOffsets>(part[rb], c, meta[i], i, acc[rb]);
    }
  }
}

// acc[rb][ct] += the 4-bit chunk at `base` times row block rb, block by block: per row block the two mmas (h = 0, 1;
// 3 terms each) of block b into a fresh fragment a tile, then folded with the rows' scales (and offsets). A is
// decoded at its mma (registers: kept for all row blocks, it spilled). The activations of the next (b, rb) load
// during the mmas (the terms made once: of the next (b, h)), in program order (hoisted, a chunk's loads spilled even
// at one row block).
template <int RB, XMode kX, bool kOffsets, int CT>
__device__ __forceinline__ void multiply(const Int4Chunk<CT>& c, const Int4Operands<CT, kOffsets>& op, int base,
                                         float (&acc)[RB][CT][4]) {
  if constexpr (kX == XMode::kQ8) {
    return multiply_q8<RB>(c, op, base, acc);
  }
  constexpr uint32_t kOnes[4] = {0x3F803F80u, 0x3F803F80u, 0x3F803F80u, 0x3F803F80u};  // BF16 1.0 pairs
  uint32_t words[CT][2][4];  // [tile][row g, g+8][block]
#pragma unroll
  for (int ct = 0; ct < CT; ++ct) {
#pragma unroll
    for (int r = 0; r < 2; ++r) quad_words(c.codes[ct][r], op.t, words[ct][r]);
  }
  constexpr bool kMade = kMadeTerms<kX>;  // the terms made once (RB == 1)
  constexpr int kN = kMade ? kTermsOf<kX> : 3;  // mmas a block and row block: one a term of x
  static_assert(!kMade || RB == 1, "x_terms: one row block");
  float4 next[2];  // loaded: x at the next (b, rb)'s 8 k, in k order
  uint32_t next_b0[3], next_b1[3];
  const auto load8 = [&](int step) {  // step (b, rb) = (step / RB, step % RB)
    const int k = base + int4_slot_k(op.t, step / RB, 0);
    next[0] = op.x.template load<true>(k, step % RB);
    next[1] = op.x.template load<true>(k + 4, step % RB);
  };
  if constexpr (kMade) {
    op.x.template load_terms<kN>(base + int4_slot_k(op.t, 0, 0), next_b0, next_b1);
  } else {
    load8(0);
  }
#pragma unroll
  for (int b = 0; b < 4; ++b) {
    uint32_t so[CT][2];  // [tile][row g, g+8]: block b's BF16 scale (low half) and offset (high half)
#pragma unroll
    for (int ct = 0; ct < CT; ++ct) {
#pragma unroll
      for (int r = 0; r < 2; ++r) so[ct][r] = __shfl_sync(0xffffffffu, c.scale_offset[ct][r], b, 4);
    }
#pragma unroll
    for (int rb = 0; rb < RB; ++rb) {
      float4 x[2];
      if constexpr (!kMade) {
        x[0] = next[0], x[1] = next[1];
        if (b * RB + rb + 1 < 4 * RB) load8(b * RB + rb + 1);
      }
      float part[CT][4] = {}, sum_x[4] = {};
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        uint32_t b0[3], b1[3];  // slots (2t, 2t+1): k (2h, 2h+4) of the 8; (2t+8, 2t+9): (2h+1, 2h+5)
        if constexpr (kMade) {
#pragma unroll
          for (int i = 0; i < kN; ++i) b0[i] = next_b0[i], b1[i] = next_b1[i];
          const int step = 2 * b + h + 1;  // the next (b, h)
          if (step < 8) op.x.template load_terms<kN>(base + int4_slot_k(op.t, step / 2, step % 2), next_b0, next_b1);
        } else {
          split3(h == 0 ? x[0].x : x[0].z, h == 0 ? x[1].x : x[1].z, b0);
          split3(h == 0 ? x[0].y : x[0].w, h == 0 ? x[1].y : x[1].w, b1);
        }
#pragma unroll
        for (int ct = 0; ct < CT; ++ct) {
          uint32_t a[4];
          int4_pairs<kOffsets>(words[ct][0][b], h, a[0], a[2]);
          int4_pairs<kOffsets>(words[ct][1][b], h, a[1], a[3]);
#pragma unroll
          for (int term = 0; term < kN; ++term) mma_bf16(part[ct], a, b0[term], b1[term]);
        }
        if constexpr (kOffsets) {
#pragma unroll
          for (int term = 0; term < kN; ++term) mma_bf16(sum_x, kOnes, b0[term], b1[term]);
        }
      }
#pragma unroll
      for (int ct = 0; ct < CT; ++ct) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {  // c[e]: weight row g (e < 2) or g+8
          float v = fmaf(__uint_as_float(so[ct][e / 2] << 16), part[ct][e], acc[rb][ct][e]);
          if constexpr (kOffsets) v = fmaf(__uint_as_float(so[ct][e / 2] & 0xFFFF0000u), sum_x[e], v);
          acc[rb][ct][e] = v;
        }
      }
    }
  }
}

// Bit r: row m0 + r of the group is computed (within M, not padding, its output not dropped); up to 64 rows.
__device__ __forceinline__ uint64_t present_group_rows(const MatmulProblem& p, int64_t m0, int rows_per_group) {
  const int n_rows = static_cast<int>(p.M - m0 < rows_per_group ? p.M - m0 : rows_per_group);
  uint64_t mask = 0;
  for (int r = 0; r < n_rows; ++r) {
    const int64_t m = m0 + r;
    if ((p.y_rows == nullptr || p.y_rows[m] >= 0) && (p.x_rows == nullptr || p.x_rows[m] >= 0)) {
      mask |= uint64_t{1} << r;
    }
  }
  return mask;
}

// Chunk i of a wide group's x (the k of x_q8 rows m0 + r, gathered, r < live_rows) and its rows' {d, Σ q} of the
// chunk's block into stage i % kWideStages of shared memory by cp.async (16 bytes a row piece, 8 a row's block), one
// commit group (empty past K).
__device__ __forceinline__ void wide_stage(const MatmulProblem& p, int64_t m0, int live_rows, int i, uint8_t* xs,
                                           float2* ms) {
  const int k0 = i * kInt4Chunk;
  if (k0 < p.K) {
    constexpr int kPieces = kInt4Chunk / 16;
    for (int c = static_cast<int>(threadIdx.x); c < live_rows * kPieces; c += static_cast<int>(blockDim.x)) {
      const int r = c / kPieces, piece = c % kPieces;
      const uint8_t* src = p.x_q8 + (m0 + r) * p.K + k0 + 16 * piece;
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(xs + r * kWideRowBytes + 16 * piece)),
                   "l"(src));
    }
    for (int r = static_cast<int>(threadIdx.x); r < live_rows; r += static_cast<int>(blockDim.x)) {
      const float* src = p.x_q8_meta + 2 * ((m0 + r) * (p.K / kQ8Block) + k0 / kQ8Block);
      asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(smem_addr(ms + r)), "l"(src));
    }
  }
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// A wide group's main loop (one k slice a column): every warp of the block multiplies the same chunks, so a chunk's x
// is staged once for the block (wide_stage, kWideStages - 1 chunks ahead) and read from shared memory, while each
// thread's codes stream into registers kInFlight chunks ahead as in the other bodies.
template <bool kOffsets, int RB, int CT>
__device__ __forceinline__ void wide_q8_chunks(Int4Operands<CT, kOffsets>& op, const MatmulProblem& p, int64_t m0,
                                               float (&acc)[RB][CT][4]) {
  __shared__ __align__(16) uint8_t xs[kWideStages][kSmallTcWideRows * kWideRowBytes];
  __shared__ __align__(16) float2 ms[kWideStages][kSmallTcWideRows];
  const int live_rows = static_cast<int>(min(static_cast<int64_t>(kRows * op.x.live_blocks), p.M - m0));  // rows < M
  const int chunks = (op.K + kInt4Chunk - 1) / kInt4Chunk;
  Int4Chunk<CT> buf[kInFlight];
#pragma unroll
  for (int u = 0; u < kInFlight; ++u) buf[u] = op.load(u * kInt4Chunk);
#pragma unroll
  for (int i = 0; i < kWideStages - 1; ++i) wide_stage(p, m0, live_rows, i, xs[i], ms[i]);
  for (int i = 0; i < chunks; i += kInFlight) {
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int c = i + u;  // uniform over the block
      if (c < chunks) {
        // Chunk c's stage has landed (this thread's copies, then everyone's); the stage of chunk c - 1, which every
        // warp has multiplied, takes chunk c + kWideStages - 1.
        asm volatile("cp.async.wait_group %0;\n" ::"n"(kWideStages - 2) : "memory");
        __syncthreads();
        const int next = c + kWideStages - 1;
        wide_stage(p, m0, live_rows, next, xs[next % kWideStages], ms[next % kWideStages]);
        op.x.staged = xs[c % kWideStages];
        op.x.staged_meta = ms[c % kWideStages];
        multiply_q8<RB>(buf[u], op, c * kInt4Chunk, acc);
      }
      buf[u] = op.load((c + kInFlight) * kInt4Chunk);
    }
  }
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

// Blocks an SM the kernel is built for (the register budget: 128 registers at 2, 255 at 1).
template <int RB, int CT>
constexpr int kMinBlocks = RB < 4 ? 2 : 1;

// The column's WPC k slices added in shared memory in warp order (bitwise reproducible), one row block at a time;
// afterwards acc of the slice-0 warp holds the column's sums.
template <int WPC, int RB, int CT>
__device__ __forceinline__ void reduce_slices(float (&acc)[RB][CT][4], int warp, int lane) {
  __shared__ float4 partial[kWarps][CT][32];
  const int slice = warp % WPC;
#pragma unroll
  for (int rb = 0; rb < RB; ++rb) {
    if (rb > 0) __syncthreads();  // the previous row block's sums are read
#pragma unroll
    for (int ct = 0; ct < CT; ++ct) {
      partial[warp][ct][lane] = make_float4(acc[rb][ct][0], acc[rb][ct][1], acc[rb][ct][2], acc[rb][ct][3]);
    }
    __syncthreads();
    if (slice != 0) continue;
#pragma unroll
    for (int ct = 0; ct < CT; ++ct) {
      float4 s = partial[warp][ct][lane];
#pragma unroll
      for (int j = 1; j < WPC; ++j) {
        const float4 q = partial[warp + j][ct][lane];
        s.x += q.x, s.y += q.y, s.z += q.z, s.w += q.w;
      }
      acc[rb][ct][0] = s.x, acc[rb][ct][1] = s.y, acc[rb][ct][2] = s.z, acc[rb][ct][3] = s.w;
    }
  }
}

// The weight half of a thread's operands: rows n0 + 16ct + 8h + g for n_g = n0 + g (null / invalid past N).
template <WType T, int CT>
__device__ __forceinline__ void set_weights(Operands<T, CT>& op, const MatmulProblem& p, const GroupView& gw,
                                            int64_t /*group*/, int64_t n_g) {
  using S = typename WTraits<T>::S;
#pragma unroll
  for (int ct = 0; ct < CT; ++ct) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t n = n_g + 16 * ct + 8 * h;
      op.w[ct][h] = n < p.N ? static_cast<const S*>(gw.w) + n * p.K : nullptr;
    }
  }
  op.K = static_cast<int>(p.K);
}

template <int CT, bool kOffsets>
__device__ __forceinline__ void set_weights(Int4Operands<CT, kOffsets>& op, const MatmulProblem& p,
                                            const GroupView& /*gw*/, int64_t group, int64_t n_g) {
  bool skip = false;
  const DevWeight dw = group_dev_weight(p, group, skip);  // not a padding group: the kernel returned for those
  op.code_stride = p.K / 2, op.n_groups = p.K / dw.group_size, op.group_size = static_cast<uint32_t>(dw.group_size);
  op.group_shift = (dw.group_size & (dw.group_size - 1)) == 0 ? __ffsll(dw.group_size) - 1 : -1;
  op.codes = static_cast<const uint8_t*>(dw.w) + n_g * op.code_stride;
  op.scales = dw.int4_scales + n_g * op.n_groups;
  op.offsets = kOffsets ? dw.int4_offsets + n_g * op.n_groups : nullptr;
  op.valid = 0;
#pragma unroll
  for (int ct = 0; ct < CT; ++ct) {
#pragma unroll
    for (int h = 0; h < 2; ++h) op.valid |= static_cast<unsigned>(n_g + 16 * ct + 8 * h < p.N) << (2 * ct + h);
  }
  op.K = static_cast<int>(p.K);
}

// What a thread holds, by weight type (kOffsets: 4-bit asymmetric), and the k of a warp's chunk.
template <WType T, bool kOffsets, int CT>
using OperandsOf = std::conditional_t<T == WType::kInt4, Int4Operands<CT, kOffsets>, Operands<T, CT>>;
template <WType T>
constexpr int kChunkOf = T == WType::kInt4 ? kInt4Chunk : kChunk;

// grid (ceil(N / block columns), groups, problems), 256 threads; a group is RB row blocks of 8 rows (RB > 1: a
// plain problem, one group). Warp w owns the 16·CT columns n0 = (blockIdx.x · (8/WPC) + w / WPC) · 16·CT and the
// chunks s, s + WPC, s + 2·WPC, ... of K for s = w % WPC; a column's partial sums over its WPC warps are added in
// shared memory in warp order (bitwise reproducible). kOffsets: 4-bit asymmetric weights.
template <WType T, bool kOffsets, XMode kX, int WPC, int RB, int CT>
__global__ void __launch_bounds__(kWarps * 32, kMinBlocks<RB, CT>) small_tc_kernel(MatmulProblem p,
                                                                                   int rows_per_group) {
  constexpr int kColWarps = kWarps / WPC;
  select_problem(p);
  const int64_t group = blockIdx.y, m0 = group * rows_per_group;
  const GroupView gw = group_weight(p, group);
  if (gw.skip) return;  // a padding group: the whole block
  const uint64_t rows = present_group_rows(p, m0, rows_per_group);
  if (rows == 0) return;  // uniform over the block
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4, slice = warp % WPC;
  const int64_t n0 = (static_cast<int64_t>(blockIdx.x) * kColWarps + warp / WPC) * (16 * CT);

  OperandsOf<T, kOffsets, CT> op;
  op.t = t;
  set_weights(op, p, gw, group, n0 + g);
  op.x.K = static_cast<int>(p.K);
  op.x.load_act = gw.load_act;
  op.x.x_blocks = 0;
#pragma unroll
  for (int rb = 0; rb < RB; ++rb) op.x.x_blocks |= static_cast<unsigned>((rows >> (kRows * rb + g)) & 1u) << rb;
  const bool mapped = p.x_rows != nullptr && ((rows >> g) & 1u) != 0;  // x_rows: one row block (small_tc_applies)
  const int64_t x_row = mapped ? p.x_rows[m0 + g] : m0 + g;
  op.x.x = p.x + x_row * p.ldx;
  op.x.terms = kMadeTerms<kX> ? p.x_terms + kTermsOf<kX> * p.K * x_row : nullptr;
  if constexpr (kX == XMode::kQ8 && RB == 1) {  // x_q8's rows indexed as x's; C's columns: rows 2t, 2t + 1
    op.x.q8 = p.x_q8 + p.K * x_row;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int r = 2 * t + i;
      const bool present = ((rows >> r) & 1u) != 0;
      const int64_t row = !present ? -1 : p.x_rows != nullptr ? p.x_rows[m0 + r] : m0 + r;
      op.x.q8_meta[i] = row < 0 ? nullptr : p.x_q8_meta + 2 * (p.K / kQ8Block) * row;
    }
  } else if constexpr (kX == XMode::kQ8) {  // a wide group: row blocks up to the last with a present row
    op.x.live_blocks = (64 - __clzll(static_cast<long long>(rows)) + kRows - 1) / kRows;
  }
  op.x.x_step = static_cast<int>(kRows * p.ldx);  // small_tc_applies: 64 rows of x span < 2^31 floats

  float acc[RB][CT][4] = {};
  if constexpr (kX == XMode::kQ8 && RB > 1) {
    wide_q8_chunks(op, p, m0, acc);
  } else {
    constexpr int kStride = WPC * kChunkOf<T>;  // k step of a warp
    decltype(op.load(0)) buf[kInFlight];
    int base = slice * kChunkOf<T>;
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) buf[u] = op.load(base + u * kStride);
    for (; base < op.K; base += kInFlight * kStride) {
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) {  // use chunk u, then issue the one kInFlight strides on in its place
        multiply<RB, kX>(buf[u], op, base + u * kStride, acc);
        buf[u] = op.load(base + (u + kInFlight) * kStride);
      }
    }
  }

  if constexpr (WPC > 1) {
    reduce_slices<WPC, RB, CT>(acc, warp, lane);
    if (slice != 0) return;
  }
  // C fragment of row block rb: c[2h + i] = (column n0 + 16ct + 8h + g, row 8rb + 2t + i).
#pragma unroll
  for (int rb = 0; rb < RB; ++rb) {
#pragma unroll
    for (int ct = 0; ct < CT; ++ct) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = kRows * rb + 2 * t + e % 2;
        const int64_t n = n0 + 16 * ct + 8 * (e / 2) + g;
        if (((rows >> r) & 1u) && n < p.N) store(p, m0 + r, n, acc[rb][ct][e] * gw.scale);
      }
    }
  }
}

// K slices a column: the fewest that give about 4 blocks an SM of an H100/H200 (132 SMs), while every slice keeps
// at least two chunks of K.
int slices_per_column(int64_t N, int64_t K, unsigned groups, int warp_cols, int chunk) {
  int wpc = 1;
  while (wpc < kWarps && static_cast<int64_t>(blocks_for(N, warp_cols * kWarps / wpc)) * groups < 4 * 132 &&
         K >= 2 * 2 * wpc * chunk) {
    wpc *= 2;
  }
  return wpc;
}

template <WType T, bool kOffsets, XMode kX, int RB, int CT>
void launch_blocks(const MatmulProblem& p, int rows_per_group, cudaStream_t stream) {
  const auto groups = static_cast<unsigned>((p.M + rows_per_group - 1) / rows_per_group);
  if constexpr (kX == XMode::kQ8 && RB > 1) {  // a wide group: one k slice (its warps share each chunk's stage)
    const dim3 grid(blocks_for(p.N, 16 * CT * kWarps), groups, p.y2 != nullptr ? 2 : 1);
    small_tc_kernel<T, kOffsets, kX, 1, RB, CT><<<grid, kWarps * 32, 0, stream>>>(p, rows_per_group);
  } else {
    const int wpc = slices_per_column(p.N, p.K, groups, 16 * CT, kChunkOf<T>);
    const dim3 grid(blocks_for(p.N, 16 * CT * kWarps / wpc), groups, p.y2 != nullptr ? 2 : 1);
    switch (wpc) {
      case 1: small_tc_kernel<T, kOffsets, kX, 1, RB, CT><<<grid, kWarps * 32, 0, stream>>>(p, rows_per_group); break;
      case 2: small_tc_kernel<T, kOffsets, kX, 2, RB, CT><<<grid, kWarps * 32, 0, stream>>>(p, rows_per_group); break;
      case 4: small_tc_kernel<T, kOffsets, kX, 4, RB, CT><<<grid, kWarps * 32, 0, stream>>>(p, rows_per_group); break;
      default: small_tc_kernel<T, kOffsets, kX, 8, RB, CT><<<grid, kWarps * 32, 0, stream>>>(p, rows_per_group); break;
    }
  }
}

// Groups of <= 8 rows: one row block, 32 columns a warp (4-bit: 16, else spills); a wide group of 64 (4-bit with x_q8
// gathered): 8 row blocks, 16 columns a warp. A plain problem of 9-64 rows: the
// fewest row blocks that hold it, in one group; with several row blocks 16 columns a warp for BF16 (twice FP8's
// weight registers in flight), 4-bit and for 8 row blocks (the accumulators), else spills.
template <WType T, bool kOffsets = false, XMode kX = XMode::kSplit>
void launch_typed(const MatmulProblem& p, int rows_per_group, cudaStream_t stream) {
  constexpr int kCT = T == WType::kF8E4M3 ? 2 : 1;
  constexpr int kOneBlockCT = T == WType::kInt4 ? 1 : 2;
  if constexpr (kX == XMode::kQ8) {  // wide groups: 8 row blocks (q8_apply, launch_small_tc)
    if (rows_per_group > kRows) return launch_blocks<T, kOffsets, kX, kMaxRowBlocks, 1>(p, rows_per_group, stream);
  }
  if (p.experts != nullptr || p.M <= kRows) {
    return launch_blocks<T, kOffsets, kX, 1, kOneBlockCT>(p, rows_per_group, stream);
  }
  if constexpr (!kOneRowBlock<kX>) {  // x_terms, x_q8: one row block only (terms_apply, q8_applies)
    if (p.M <= 2 * kRows) return launch_blocks<T, kOffsets, kX, 2, kCT>(p, 2 * kRows, stream);
    if (p.M <= 4 * kRows) return launch_blocks<T, kOffsets, kX, 4, kCT>(p, 4 * kRows, stream);
    launch_blocks<T, kOffsets, kX, 8, 1>(p, 8 * kRows, stream);
  }
}

}  // namespace

cudaError_t launch_small_tc(const MatmulProblem& p, int rows_per_group, cudaStream_t stream) {
  // A wide group: 4-bit experts with x_q8 (gathered: the problem's rows) only.
  const bool wide = rows_per_group > kRows;  // x_q8 given, 16-byte aligned (its stages' copies)
  if (rows_per_group <= 0 ||
      (wide && (p.experts == nullptr || p.x_q8 == nullptr || p.x_q8_meta == nullptr ||
                reinterpret_cast<uintptr_t>(p.x_q8) % 16 != 0 || !q8_apply(p)))) {
    return cudaErrorInvalidValue;
  }
  if (p.weight.type == WType::kF8E4M3) {  // W8A8 on every expert or on none (the host checks)
    if (p.weight.act_scale == 0.0f || (p.x_quantized && w8a8_split_terms())) {
      launch_typed<WType::kF8E4M3, false, XMode::kSplit>(p, rows_per_group, stream);
    } else if (p.x_quantized) {
      launch_typed<WType::kF8E4M3, false, XMode::kFp8>(p, rows_per_group, stream);
    } else {
      launch_typed<WType::kF8E4M3, false, XMode::kQuantise>(p, rows_per_group, stream);
    }
  } else if (p.weight.type == WType::kInt4) {
    // weight2 and the experts have weight's symmetry (the host checks).
    const bool offsets = p.weight.int4_offsets != nullptr;
    if (p.x_terms != nullptr && p.x_term_planes != 1 && p.x_term_planes != 3) return cudaErrorInvalidValue;
    const auto aligned8 = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 8 == 0; };
    if ((p.x_q8 == nullptr) != (p.x_q8_meta == nullptr) || !aligned8(p.x_q8) || !aligned8(p.x_q8_meta)) {
      return cudaErrorInvalidValue;
    }
    if (p.x_q8 != nullptr && q8_apply(p)) {  // one row block (q8_apply; launch_typed launches no other)
      offsets ? launch_typed<WType::kInt4, true, XMode::kQ8>(p, rows_per_group, stream)
              : launch_typed<WType::kInt4, false, XMode::kQ8>(p, rows_per_group, stream);
    } else if (p.x_terms != nullptr && terms_apply(p)) {  // one row block (terms_apply; launch_typed launches no other)
      if (p.x_term_planes == 1) {
        offsets ? launch_typed<WType::kInt4, true, XMode::kTerms1>(p, rows_per_group, stream)
                : launch_typed<WType::kInt4, false, XMode::kTerms1>(p, rows_per_group, stream);
      } else {
        offsets ? launch_typed<WType::kInt4, true, XMode::kTerms>(p, rows_per_group, stream)
                : launch_typed<WType::kInt4, false, XMode::kTerms>(p, rows_per_group, stream);
      }
    } else {
      offsets ? launch_typed<WType::kInt4, true>(p, rows_per_group, stream)
              : launch_typed<WType::kInt4, false>(p, rows_per_group, stream);
    }
  } else if (p.weight.type == WType::kBF16) {
    launch_typed<WType::kBF16>(p, rows_per_group, stream);
  } else {
    return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace quatre::cuda
