// The int8 activations' rule on the device (core/int4.h round_q8_blocks; QUATRE_CUDA_INT4_ACT=q8), shared by the
// kernels that quantise (matmul_staged.cu in its loads, ops.cu's launch_quantize_q8) and the one that scales the
// integer sums (matmul_small_tc.cu): a block's maximum with NaN kept, the inverse step, a value's int8 code through
// 1.5·2^23, and an int32 sum back to a float the same way.
// Depends on CUDA and core/int4.h.
#pragma once

#include <cstdint>

#include "core/int4.h"

namespace quatre::cuda {

// max(a, b), NaN if either is (fmaxf drops a NaN: a block with one must come out NaN).
__device__ __forceinline__ float max_nan(float a, float b) {
  asm("max.NaN.f32 %0, %0, %1;" : "+f"(a) : "f"(b));
  return a;
}

// 127 / a for a block whose largest magnitude is a, or 0 below kQ8MinBlockMax (127 / a would overflow): its codes
// are then 0.
__device__ __forceinline__ float q8_inverse_step(float amax) {
  return amax >= kQ8MinBlockMax ? __fdiv_rn(127.0f, amax) : 0.0f;
}

// The block's step d = a / 127.
__device__ __forceinline__ float q8_step(float amax) { return __fdiv_rn(amax, 127.0f); }

// 1.5·2^23 (bits 0x4B400000): 1.5·2^23 + v, |v| < 2^22, holds v as an integer in its low mantissa bits.
inline constexpr float kQ8Round = 12582912.0f;

// The bits of 1.5·2^23 + x·inv, x·inv rounded to nearest even once: the low byte is the int8 code (two's complement).
__device__ __forceinline__ uint32_t q8_code_bits(float x, float inv) { return __float_as_uint(fmaf(x, inv, kQ8Round)); }

// 1.5·2^23 + v as a float for an integer |v| < 2^22 (an add on the bits: no conversion unit); minus kQ8Round, v.
__device__ __forceinline__ float q8_widened(int v) { return __int_as_float(v + 0x4B400000); }

}  // namespace quatre::cuda
