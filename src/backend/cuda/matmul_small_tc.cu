// y = x · wᵀ on the tensor cores for small groups (2-8 rows: decode batches, MoE expert groups; plain problems of
// up to 64 rows) with BF16 or FP8 weights, "swap AB": the weights are mma.sync's A operand (16 output columns x 16
// k), a block of <= 8 rows its B operand (16 k x 8 rows; absent rows are zeros), so one m16n8k16 does 16 x 8 x 16
// multiply-adds that the FMA kernel of matmul.cu issues one by one. A plain problem of 9-64 rows runs as one group
// of 2, 4 or 8 row blocks: each weight fragment, loaded once, is multiplied against every row block, so the weights
// stream from memory once for all rows. As in matmul_tc.cu, fp32 activations are split into three BF16 terms
// (hi + mid + lo) multiplied against the same weights (FP8 E4M3 and BF16 are exact in BF16), so the result matches
// fp32 arithmetic up to summation order. The weights go from global memory straight into registers (16-byte loads,
// no shared memory), each thread given a permuted set of k so that its loads are contiguous.
// QUATRE_CUDA_SMALL_TC=0 (read once) turns the kernel off: the FMA kernel of matmul.cu then runs (A/B timing).
// Depends on CUDA only.
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "backend/cuda/matmul_common.cuh"

namespace quatre::cuda {
namespace {

constexpr int kRows = 8;         // B's columns: the rows of a row block
constexpr int kMaxRowBlocks = 8; // plain problems: up to 64 rows in one pass over the weights
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

__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// Two FP8 E4M3 weights (the low byte first) as packed BF16, exactly: E4M3 -> f16 is exact, f16 -> f32 exact, and
// every E4M3 value (4 significant bits, 2^-9 .. 448) is a BF16 value.
__device__ __forceinline__ uint32_t fp8x2_to_bf16x2(uint32_t bits) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(bits & 0xFFFFu), __NV_E4M3);
  const float2 f = __half22float2(__half2(h));
  const __nv_bfloat162 b = __floats2bfloat162_rn(f.x, f.y);
  return *reinterpret_cast<const uint32_t*>(&b);
}

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

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 b = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&b);
}

// x = hi + mid + lo in BF16 terms, as matmul_tc.cu splits: each term the rounded remainder of the ones before.
// Packed pairs (v0, v1): term[i] = {b0b1} register of that term.
__device__ __forceinline__ void split3(float v0, float v1, uint32_t (&term)[3]) {
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    term[i] = pack_bf16x2(v0, v1);
    v0 -= __uint_as_float(term[i] << 16);
    v1 -= __uint_as_float(term[i] & 0xFFFF0000u);
  }
}

// A thread's view of the problem: its weight rows (null past N), its activation rows g, g + 8, ... of the RB row
// blocks (x_blocks bit rb: row 8rb + g is present; absent rows read as zeros).
template <WType T, int CT>
struct Operands {
  using S = typename WTraits<T>::S;
  const S* w[CT][2];  // rows n0 + 16c + g and + 8
  const float* x;     // [K] of row g of row block 0 (of the group)
  int x_step;         // x of row block rb: x + rb · x_step (plain problems; one row block otherwise)
  unsigned x_blocks;
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

  // x[row 8rb + g][k .. k+4) (zeros past K or for an absent row). Ordered: a volatile load, kept in program order
  // among the mmas (else the compiler hoists all of a chunk's activation loads of every row block, and spills).
  template <bool kOrdered>
  __device__ float4 load_x(int k, int rb) const {
    if (((x_blocks >> rb) & 1u) == 0 || k >= K) return make_float4(0, 0, 0, 0);
    const float* at = x + (rb * x_step + k);
    if constexpr (!kOrdered) return *reinterpret_cast<const float4*>(at);
    float4 v;
    asm volatile("ld.global.v4.f32 {%0,%1,%2,%3}, [%4];\n" : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "l"(at));
    return v;
  }
};

// acc[rb][ct] += the chunk at `base` times row block rb: per mma j, A from the chunk (converted once for all row
// blocks), the activations split into 3 terms, 3 mmas a column tile. Each accumulator sees mma j, then term, in
// order. Several row blocks: the activations of step (j, rb) load during the mmas of the step before.
template <WType T, int RB, int CT>
__device__ __forceinline__ void multiply(const Chunk<T, CT>& c, const Operands<T, CT>& op, int base,
                                         float (&acc)[RB][CT][4]) {
  constexpr bool kOrdered = RB > 1;
  float4 next = op.template load_x<kOrdered>(base + slot_k<T>(op.t, 0), 0);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    uint32_t a[CT][4];
#pragma unroll
    for (int ct = 0; ct < CT; ++ct) a_fragment<T>(c.w[ct][0], c.w[ct][1], j, a[ct]);
#pragma unroll
    for (int rb = 0; rb < RB; ++rb) {
      const float4 x = next;
      const int step = j * RB + rb + 1;  // the next step's (j, rb)
      if (step < 4 * RB) next = op.template load_x<kOrdered>(base + slot_k<T>(op.t, step / RB), step % RB);
      uint32_t b0[3], b1[3];  // [term]: B registers {b0b1}, {b2b3} = x at slot_k + {0,1}, + {2,3}
      split3(x.x, x.y, b0);
      split3(x.z, x.w, b1);
#pragma unroll
      for (int ct = 0; ct < CT; ++ct) {
#pragma unroll
        for (int term = 0; term < 3; ++term) mma_bf16(acc[rb][ct], a[ct], b0[term], b1[term]);
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

// grid (ceil(N / block columns), groups, problems), 256 threads; a group is RB row blocks of 8 rows (RB > 1: a
// plain problem, one group). Warp w owns the 16·CT columns n0 = (blockIdx.x · (8/WPC) + w / WPC) · 16·CT and the
// chunks s, s + WPC, s + 2·WPC, ... of K for s = w % WPC; a column's partial sums over its WPC warps are added in
// shared memory in warp order (bitwise reproducible).
template <WType T, int WPC, int RB, int CT>
__global__ void __launch_bounds__(kWarps * 32, kMinBlocks<RB, CT>) small_tc_kernel(MatmulProblem p,
                                                                                   int rows_per_group) {
  using S = typename WTraits<T>::S;
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

  Operands<T, CT> op;
  op.t = t, op.K = static_cast<int>(p.K);
#pragma unroll
  for (int ct = 0; ct < CT; ++ct) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t n = n0 + 16 * ct + 8 * h + g;
      op.w[ct][h] = n < p.N ? static_cast<const S*>(gw.w) + n * p.K : nullptr;
    }
  }
  op.x_blocks = 0;
#pragma unroll
  for (int rb = 0; rb < RB; ++rb) op.x_blocks |= static_cast<unsigned>((rows >> (kRows * rb + g)) & 1u) << rb;
  const bool mapped = p.x_rows != nullptr && ((rows >> g) & 1u) != 0;  // x_rows: one row block (small_tc_applies)
  op.x = p.x + (mapped ? p.x_rows[m0 + g] : m0 + g) * p.ldx;
  op.x_step = static_cast<int>(kRows * p.ldx);  // small_tc_applies: 64 rows of x span < 2^31 floats

  float acc[RB][CT][4] = {};
  constexpr int kStride = WPC * kChunk;  // k step of a warp
  Chunk<T, CT> buf[kInFlight];
  int base = slice * kChunk;
#pragma unroll
  for (int u = 0; u < kInFlight; ++u) buf[u] = op.load(base + u * kStride);
  for (; base < op.K; base += kInFlight * kStride) {
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {  // use chunk u, then issue the one kInFlight strides on in its place
      multiply<T, RB, CT>(buf[u], op, base + u * kStride, acc);
      buf[u] = op.load(base + (u + kInFlight) * kStride);
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
int slices_per_column(int64_t N, int64_t K, unsigned groups, int warp_cols) {
  int wpc = 1;
  while (wpc < kWarps && static_cast<int64_t>(blocks_for(N, warp_cols * kWarps / wpc)) * groups < 4 * 132 &&
         K >= 2 * 2 * wpc * kChunk) {
    wpc *= 2;
  }
  return wpc;
}

template <WType T, int RB, int CT>
void launch_blocks(const MatmulProblem& p, int rows_per_group, cudaStream_t stream) {
  const auto groups = static_cast<unsigned>((p.M + rows_per_group - 1) / rows_per_group);
  const int wpc = slices_per_column(p.N, p.K, groups, 16 * CT);
  const dim3 grid(blocks_for(p.N, 16 * CT * kWarps / wpc), groups, p.y2 != nullptr ? 2 : 1);
  switch (wpc) {
    case 1: small_tc_kernel<T, 1, RB, CT><<<grid, kWarps * 32, 0, stream>>>(p, rows_per_group); break;
    case 2: small_tc_kernel<T, 2, RB, CT><<<grid, kWarps * 32, 0, stream>>>(p, rows_per_group); break;
    case 4: small_tc_kernel<T, 4, RB, CT><<<grid, kWarps * 32, 0, stream>>>(p, rows_per_group); break;
    default: small_tc_kernel<T, 8, RB, CT><<<grid, kWarps * 32, 0, stream>>>(p, rows_per_group); break;
  }
}

// Groups of <= 8 rows: one row block, 32 columns a warp. A plain problem of 9-64 rows: the fewest row blocks that
// hold it, in one group; with several row blocks 16 columns a warp for BF16 (twice FP8's weight registers in
// flight) and for 8 row blocks (the accumulators), else spills.
template <WType T>
void launch_typed(const MatmulProblem& p, int rows_per_group, cudaStream_t stream) {
  constexpr int kCT = T == WType::kBF16 ? 1 : 2;
  if (p.experts != nullptr || p.M <= kRows) return launch_blocks<T, 1, 2>(p, rows_per_group, stream);
  if (p.M <= 2 * kRows) return launch_blocks<T, 2, kCT>(p, 2 * kRows, stream);
  if (p.M <= 4 * kRows) return launch_blocks<T, 4, kCT>(p, 4 * kRows, stream);
  launch_blocks<T, 8, 1>(p, 8 * kRows, stream);
}

std::atomic<int> g_test_mode{-1};  // set_small_tc_for_tests

bool env_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("QUATRE_CUDA_SMALL_TC");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return on;
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

void set_small_tc_for_tests(int mode) { g_test_mode.store(mode); }

bool small_tc_applies(const MatmulProblem& p) {
  const int mode = g_test_mode.load();
  if (mode == 0 || (mode < 0 && !env_enabled())) return false;
  const bool fp8 = p.weight.type == WType::kF8E4M3;
  if (!fp8 && p.weight.type != WType::kBF16) return false;
  if (p.K % (fp8 ? 16 : 8) != 0 || p.K > INT32_MAX / 2) return false;  // whole 16-byte loads; k is an int
  if (p.ldx % 4 != 0 || !aligned16(p.x)) return false;                 // float4 activation loads
  const bool grouped = p.experts != nullptr;
  if (grouped ? p.rows_per_group > kRows : p.M > kMaxRowBlocks * kRows) return false;
  // Row blocks step through x by ldx, in int offsets.
  if (!grouped && p.M > kRows && (p.x_rows != nullptr || p.ldx > INT32_MAX / (kMaxRowBlocks * kRows))) return false;
  if (!grouped && (!aligned16(p.weight.w) || (p.y2 != nullptr && !aligned16(p.weight2.w)))) return false;
  if (mode == 1) return true;
  // BF16 weights of more than 8 rows spill in the row-block variants: measured on an H100 at 64 rows, the 1 GB lm_head
  // took 1.64 ms here against ~1.1 on the large-M tile; the 1 MB router was faster here. Large BF16 ones stay there.
  if (!grouped && !fp8 && p.M > kRows && p.N * p.K > (int64_t{16} << 20)) return false;
  return grouped ? p.rows_hint >= 2.0f : p.M >= 2;
}

cudaError_t launch_small_tc(const MatmulProblem& p, int rows_per_group, cudaStream_t stream) {
  if (rows_per_group <= 0 || rows_per_group > kRows) return cudaErrorInvalidValue;
  if (p.weight.type == WType::kF8E4M3) {
    launch_typed<WType::kF8E4M3>(p, rows_per_group, stream);
  } else if (p.weight.type == WType::kBF16) {
    launch_typed<WType::kBF16>(p, rows_per_group, stream);
  } else {
    return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace quatre::cuda
