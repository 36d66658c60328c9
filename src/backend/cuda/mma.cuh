// Tensor-core building blocks shared by the kernels that use mma.sync (matmul_tc.cu, matmul_small_tc.cu,
// mla_tc.cu): the BF16 m16n8k16 MMA, ldmatrix from shared memory, and the exact conversions into BF16 operands
// (fp32 as three BF16 terms, FP8 E4M3 pairs). Depends on CUDA only.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

namespace quatre::cuda {

// d += a · b: A 16x16 row-major (4 regs), B 16x8 column-major (2 regs), fp32 accumulators. Thread (g = lane / 4,
// c = lane % 4) holds A rows g and g + 8 at columns 2c, 2c + 1 (a0, a1) and 2c + 8, 2c + 9 (a2, a3), B column g at
// rows 2c, 2c + 1 (b0) and 2c + 8, 2c + 9 (b1), D rows g (d0, d1) and g + 8 (d2, d3) at columns 2c, 2c + 1.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// acc += a · b with FP8 E4M3 operands (W8A8): A 16x32 row-major (4 regs of 4 bytes), B 32x8 column-major (2 regs).
// Thread (g, c) holds A row g at k 4c..4c+3 (a0), row g + 8 (a1), and the same rows at k 16 + 4c.. (a2, a3); B
// column g at k 4c..4c+3 (b0) and 16 + 4c.. (b1); acc as mma_bf16's D. The byte layout of a 16-byte shared row is
// that of 8 BF16 pairs, so ldmatrix loads both (k offsets in bytes). The FP8 mma's own accumulator keeps ~13
// mantissa bits on Ada and Hopper (DeepSeek-V3 §3.5.2, SageAttention2), so each mma starts from zero and its 32-k
// sum is added to acc in fp32.
__device__ __forceinline__ void mma_fp8(float (&acc)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  float d[4];
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%10,%10,%10};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(0.0f));
#pragma unroll
  for (int i = 0; i < 4; ++i) acc[i] += d[i];
}

// acc += a · b exactly in int32 with unsigned 8-bit A (4-bit codes) and signed 8-bit B (int8 activations): the
// fragments as mma_fp8's.
__device__ __forceinline__ void mma_u8s8(int (&acc)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(acc[0]), "+r"(acc[1]), "+r"(acc[2]), "+r"(acc[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Four 8x8 BF16 matrices from shared memory; lanes 8i..8i+7 give the 16-byte rows of matrix i, and register i holds
// a thread's pair (row lane / 4, columns 2 (lane % 4), + 1) of matrix i.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// The same, transposed: register i holds the pair (rows 2 (lane % 4), + 1; column lane / 4) of matrix i.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// Two 8x8 BF16 matrices, transposed (lanes 0-7 and 8-15 give their rows; the others' addresses are ignored).
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(p)));
}

// Two floats as packed BF16 (round to nearest even; lo in the low half).
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 b = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&b);
}

// x = hi + mid + lo in BF16 terms, each term the rounded remainder of the ones before (24 significant bits: fp32
// exactly, barring subnormal remainders). Packed pairs (v0, v1): term[i] = {b0b1} register of that term.
// split_bf16<1> is the plain rounding to BF16 (8 significant bits).
template <int N>
__device__ __forceinline__ void split_bf16(float v0, float v1, uint32_t (&term)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    term[i] = pack_bf16x2(v0, v1);
    v0 -= __uint_as_float(term[i] << 16);
    v1 -= __uint_as_float(term[i] & 0xFFFF0000u);
  }
}
__device__ __forceinline__ void split3(float v0, float v1, uint32_t (&term)[3]) { split_bf16<3>(v0, v1, term); }

// Two FP8 E4M3 values (the low byte first) as packed BF16, exactly: E4M3 -> f16 is exact, f16 -> f32 exact, and
// every E4M3 value (4 significant bits, 2^-9 .. 448) is a BF16 value.
__device__ __forceinline__ uint32_t fp8x2_to_bf16x2(uint32_t bits) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(bits & 0xFFFFu), __NV_E4M3);
  const float2 f = __half22float2(__half2(h));
  return pack_bf16x2(f.x, f.y);
}

}  // namespace quatre::cuda
