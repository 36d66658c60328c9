// Device helpers shared by the matmul kernels (matmul.cu: CUDA cores, matmul_staged.cu: one-row groups through
// shared memory, matmul_tc.cu / matmul_small_tc.cu: tensor cores): the weight of a row group (plain or grouped MoE
// problems; the whole DevWeight for 4-bit weights), a group's present rows, 4-bit codes of a 16-byte load as fp32,
// and the epilogue store (row scatter, row scale, accumulate).
// Depends on CUDA only.
#pragma once

#include <cstddef>

#include "backend/cuda/device_math.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/small_tc_policy.h"

namespace quatre::cuda {

struct GroupView {
  const void* w;
  float scale;
  float act_scale;  // W8A8: the activations' static scale (DevWeight), else 0
  float load_act;   // what act_q divides x by on its loads: act_scale, or 0 where x is already quantised
  bool skip;
};

// The scale act_q divides a load of x by: a weight's act_scale, or 0 (x as is) where p.x_quantized.
__device__ __forceinline__ float load_act(const MatmulProblem& p, float act_scale) {
  return p.x_quantized ? 0.0f : act_scale;
}

// The problem of this block: the second one (weight2 / experts2 -> y2) in the launch's second z slice.
__device__ __forceinline__ void select_problem(MatmulProblem& p) {
  if (blockIdx.z == 1) p.weight = p.weight2, p.experts = p.experts2, p.y = p.y2;
}

__device__ __forceinline__ GroupView group_weight(const MatmulProblem& p, int64_t group) {
  if (p.experts == nullptr) return {p.weight.w, p.weight.scale, p.weight.act_scale, load_act(p, p.weight.act_scale), false};
  const int32_t e = p.group_expert[group];
  if (e < 0) return {nullptr, 0.0f, 0.0f, 0.0f, true};
  const float a = p.experts[e].act_scale;
  return {p.experts[e].w, p.experts[e].scale, a, load_act(p, a), false};
}

// second ? b : a, field by field (a select of the whole struct would copy the kernel's parameters to the stack).
static_assert(sizeof(DevWeight) == 40 && offsetof(DevWeight, act_scale) == 36,
              "pick() copies every field of DevWeight, act_scale the last: add a new one there");
__device__ __forceinline__ DevWeight pick(bool second, const DevWeight& a, const DevWeight& b) {
  return {.w = second ? b.w : a.w,
          .type = second ? b.type : a.type,
          .scale = second ? b.scale : a.scale,
          .int4_scales = second ? b.int4_scales : a.int4_scales,
          .int4_offsets = second ? b.int4_offsets : a.int4_offsets,
          .group_size = second ? b.group_size : a.group_size,
          .act_scale = second ? b.act_scale : a.act_scale};
}

// The whole DevWeight of a row group (4-bit kernels read its scales, offsets and group size); skip: padding group.
// plain / experts: the problem's weight and experts (or weight2 and experts2).
__device__ __forceinline__ DevWeight group_dev_weight(const DevWeight& plain, const DevWeight* experts,
                                                      const int32_t* group_expert, int64_t group, bool& skip) {
  skip = false;
  if (experts == nullptr) return plain;
  const int32_t e = __ldcg(group_expert + group);  // from L2: a dependent launch may read it early (pdl.cuh)
  skip = e < 0;
  return skip ? DevWeight{} : experts[e];
}
__device__ __forceinline__ DevWeight group_dev_weight(const MatmulProblem& p, int64_t group, bool& skip) {
  return group_dev_weight(p.weight, p.experts, p.group_expert, group, skip);
}

// Output (m, n) of the problem into y (p.y, or p.y2 for the second problem).
__device__ __forceinline__ void store(const MatmulProblem& p, float* y, int64_t m, int64_t n, float v) {
  const int64_t row = p.y_rows != nullptr ? p.y_rows[m] : m;
  if (row < 0) return;
  if (p.row_scale != nullptr) v *= p.row_scale[row];
  float* dst = y + row * p.ldy + n;
  *dst = p.accumulate ? *dst + v : v;
}
__device__ __forceinline__ void store(const MatmulProblem& p, int64_t m, int64_t n, float v) { store(p, p.y, m, n, v); }

// Group of column k of a row: a shift when the group size is a power of two.
__device__ __forceinline__ int64_t int4_group(int64_t k, int group_size, int group_shift) {
  if (group_shift >= 0) return k >> group_shift;
  return static_cast<int64_t>(static_cast<uint32_t>(k) / static_cast<uint32_t>(group_size));
}

// log2 of a group size that is a power of two, else -1 (int4_group divides).
__device__ __forceinline__ int int4_group_shift(int group_size) {
  return (group_size & (group_size - 1)) == 0 ? __ffs(group_size) - 1 : -1;
}

// 4-bit weights (core/int4.h): the 8 codes of a 32-bit word of a load (columns 8q .. 8q+8 for word q), in column
// order, as c - 8 (symmetric) or s * c + m (asymmetric).
template <bool kSymmetric>
__device__ __forceinline__ void decode_int4_word(uint32_t word, float s, float m, float4& lo, float4& hi) {
  // 0x4B000000 | c is the float 2^23 + c: one byte permute a code, and one exact subtraction.
  constexpr float kBias = kSymmetric ? 8388616.0f : 8388608.0f;  // 2^23 + 8, 2^23
  const uint32_t even = word & 0x0F0F0F0Fu, odd = (word >> 4) & 0x0F0F0F0Fu;  // low / high nibbles
  float v[8];
#pragma unroll
  for (int b = 0; b < 4; ++b) {
    v[2 * b] = __uint_as_float(__byte_perm(even, 0x4B000000u, 0x7440u | b)) - kBias;
    v[2 * b + 1] = __uint_as_float(__byte_perm(odd, 0x4B000000u, 0x7440u | b)) - kBias;
  }
  if constexpr (!kSymmetric) {
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = __fadd_rn(__fmul_rn(s, v[j]), m);
  }
  lo = make_float4(v[0], v[1], v[2], v[3]);
  hi = make_float4(v[4], v[5], v[6], v[7]);
}

// Bit i: row m0 + i of the group is computed (within M, and its output not dropped). Uniform over the block.
__device__ __forceinline__ unsigned present_rows(const MatmulProblem& p, int64_t m0, int rows_per_group) {
  const int n_rows = static_cast<int>(p.M - m0 < rows_per_group ? p.M - m0 : rows_per_group);
  unsigned mask = 0;
  for (int i = 0; i < n_rows; ++i) {
    // A row whose output is dropped (y_rows -1: a MoE group's padding) is not computed either: the routed down
    // of one token is 1 real row in a group of 8, and computing all 8 made it 8x the FMAs (compute-bound).
    const int64_t m = m0 + i;
    if ((p.y_rows == nullptr || p.y_rows[m] >= 0) && (p.x_rows == nullptr || p.x_rows[m] >= 0)) mask |= 1u << i;
  }
  return mask;
}

// Groups of <= 8 rows with FP8, BF16 or 4-bit weights of 512-4096-byte rows (FP8 and BF16 8192 too, opt-in) through
// shared memory (matmul_staged.cu; where staged_applies, kernels.h): the kernel for the FMA kernel's one-row groups
// (decode at batch 1); off with QUATRE_CUDA_STAGED=0.
cudaError_t launch_staged(const MatmulProblem& p, int rows_per_group, cudaStream_t stream);

// Tensor-core path for M > 8 rows and BF16/FP8 weights (matmul_tc.cu); false when it does not apply (4-bit weights:
// the tile kernel of matmul.cu).
bool matmul_tc_applies(const MatmulProblem& p);
cudaError_t launch_matmul_tc(const MatmulProblem& p, cudaStream_t stream);
int64_t matmul_tc_workspace_floats(const MatmulProblem& p);  // the split-K partials launch_matmul_tc would write

// The small tensor-core kernel (matmul_small_tc.cu) where small_tc_applies (small_tc_policy.h); rows_per_group: the
// group's rows (plain: 8, whatever M).
cudaError_t launch_small_tc(const MatmulProblem& p, int rows_per_group, cudaStream_t stream);

}  // namespace quatre::cuda
