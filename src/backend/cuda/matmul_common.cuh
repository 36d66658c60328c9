// Device helpers shared by the matmul kernels (matmul.cu: CUDA cores, matmul_tc.cu: tensor cores): the weight of a
// row group (plain or grouped MoE problems; the whole DevWeight for 4-bit weights) and the epilogue store (row
// scatter, row scale, accumulate).
// Depends on CUDA only.
#pragma once

#include "backend/cuda/device_math.cuh"
#include "backend/cuda/mma.cuh"

namespace quatre::cuda {

struct GroupView {
  const void* w;
  float scale;
  bool skip;
};

// The problem of this block: the second one (weight2 / experts2 -> y2) in the launch's second z slice.
__device__ __forceinline__ void select_problem(MatmulProblem& p) {
  if (blockIdx.z == 1) p.weight = p.weight2, p.experts = p.experts2, p.y = p.y2;
}

__device__ __forceinline__ GroupView group_weight(const MatmulProblem& p, int64_t group) {
  if (p.experts == nullptr) return {p.weight.w, p.weight.scale, false};
  const int32_t e = p.group_expert[group];
  if (e < 0) return {nullptr, 0.0f, true};
  return {p.experts[e].w, p.experts[e].scale, false};
}

// second ? b : a, field by field (a select of the whole struct would copy the kernel's parameters to the stack).
static_assert(sizeof(DevWeight) == 40, "pick() copies every field of DevWeight: add a new one there");
__device__ __forceinline__ DevWeight pick(bool second, const DevWeight& a, const DevWeight& b) {
  return {.w = second ? b.w : a.w,
          .type = second ? b.type : a.type,
          .scale = second ? b.scale : a.scale,
          .int4_scales = second ? b.int4_scales : a.int4_scales,
          .int4_offsets = second ? b.int4_offsets : a.int4_offsets,
          .group_size = second ? b.group_size : a.group_size};
}

// The whole DevWeight of a row group (4-bit kernels read its scales, offsets and group size); skip: padding group.
// plain / experts: the problem's weight and experts (or weight2 and experts2).
__device__ __forceinline__ DevWeight group_dev_weight(const DevWeight& plain, const DevWeight* experts,
                                                      const int32_t* group_expert, int64_t group, bool& skip) {
  skip = false;
  if (experts == nullptr) return plain;
  const int32_t e = group_expert[group];
  skip = e < 0;
  return skip ? DevWeight{} : experts[e];
}
__device__ __forceinline__ DevWeight group_dev_weight(const MatmulProblem& p, int64_t group, bool& skip) {
  return group_dev_weight(p.weight, p.experts, p.group_expert, group, skip);
}

__device__ __forceinline__ void store(const MatmulProblem& p, int64_t m, int64_t n, float v) {
  const int64_t row = p.y_rows != nullptr ? p.y_rows[m] : m;
  if (row < 0) return;
  if (p.row_scale != nullptr) v *= p.row_scale[row];
  float* dst = p.y + row * p.ldy + n;
  *dst = p.accumulate ? *dst + v : v;
}

// Tensor-core path for M > 8 rows and BF16/FP8 weights (matmul_tc.cu); false when it does not apply (4-bit weights:
// the tile kernel of matmul.cu).
bool matmul_tc_applies(const MatmulProblem& p);
cudaError_t launch_matmul_tc(const MatmulProblem& p, cudaStream_t stream);
int64_t matmul_tc_workspace_floats(const MatmulProblem& p);  // the split-K partials launch_matmul_tc would write

// Tensor-core path for <= 8 rows a group or plain problems of <= 64 rows (matmul_small_tc.cu): BF16/FP8/4-bit
// weights, K % 16 (FP8) / % 8 (BF16) / % 32 and % G (4-bit, G % 32 == 0) == 0, 16-byte aligned rows, no x_rows
// past 8 plain rows, and rows enough (plain: M >= 2; grouped: rows_hint >= 1, QUATRE_CUDA_SMALL_TC_MIN_HINT); off with
// QUATRE_CUDA_SMALL_TC=0. False: the FMA kernel of matmul.cu (or past 8 rows the large-M kernels) runs. rows_per_group: the group's rows (plain: 8, whatever M).
bool small_tc_applies(const MatmulProblem& p);
cudaError_t launch_small_tc(const MatmulProblem& p, int rows_per_group, cudaStream_t stream);

}  // namespace quatre::cuda
