// Device helpers shared by the .cu files of the CUDA backend: stored-weight decoding (F32, BF16, F16, FP8 E4M3 ->
// fp32, an element or four weights of a 16-byte load at a time; one 4-bit element by core/int4.h's rule), warp
// reductions, the dispatch of a weight type to a template, batched copies (loads in flight before their stores);
// the kernels' A/B switches (env_switch.h).
// Depends on CUDA only.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "backend/cuda/env_switch.h"
#include "backend/cuda/kernels.h"

namespace quatre::cuda {

template <WType T>
struct WTraits;
template <>
struct WTraits<WType::kF32> {
  using S = float;
  static __device__ __forceinline__ float to_f32(S v) { return v; }
};
template <>
struct WTraits<WType::kBF16> {
  using S = uint16_t;
  static __device__ __forceinline__ float to_f32(S v) { return __uint_as_float(static_cast<uint32_t>(v) << 16); }
};
template <>
struct WTraits<WType::kF16> {
  using S = uint16_t;
  static __device__ __forceinline__ float to_f32(S v) {
    __half_raw h;
    h.x = v;
    return __half2float(__half(h));
  }
};
template <>
struct WTraits<WType::kF8E4M3> {
  using S = uint8_t;
  static __device__ __forceinline__ float to_f32(S v) {
    const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(v), __NV_E4M3);
    return __half2float(__half(h));
  }
};

// W8A8 (DevWeight::act_scale): the FP8 E4M3 bytes of x / a for two activations (low byte first), each quotient
// correctly rounded, then clamped to ±448 and rounded to nearest even (the cvt's satfinite), as the CPU backend
// does (core/dtype.h f32_to_fp8e4m3). a = 0: x already holds FP8 values (MatmulProblem::x_quantized), their bytes.
__device__ __forceinline__ uint16_t act_fp8x2(float x0, float x1, float a) {
  const float2 q = a == 0.0f ? make_float2(x0, x1) : make_float2(__fdiv_rn(x0, a), __fdiv_rn(x1, a));
  return __nv_cvt_float2_to_fp8x2(q, __NV_SATFINITE, __NV_E4M3);
}

// The same as floats: the value the W8A8 product takes for x (a = 0: x itself: W8A16, or x already quantised).
__device__ __forceinline__ float act_q(float x, float a) {
  if (a == 0.0f) return x;
  const __nv_fp8_storage_t b = __nv_cvt_float_to_fp8(__fdiv_rn(x, a), __NV_SATFINITE, __NV_E4M3);
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(b, __NV_E4M3)));
}
__device__ __forceinline__ float4 act_q4(float4 v, float a) {
  if (a == 0.0f) return v;
  return make_float4(act_q(v.x, a), act_q(v.y, a), act_q(v.z, a), act_q(v.w, a));
}

template <>
struct WTraits<WType::kInt4> {
  using S = uint8_t;  // two packed codes; no to_f32: the value needs the group's scale (int4_weight_at)
};

// 32-bit word i of a 16-byte load (i known at compile time: a register, no select).
__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// Two weights of a 32-bit word (16-bit types; the lower half first), as fp32 (unscaled).
template <WType T>
__device__ __forceinline__ float2 word_to_float2(uint32_t w) {
  if constexpr (T == WType::kBF16) {
    return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xFFFF0000u));
  } else {
    static_assert(T == WType::kF16);
    __half2_raw h;
    h.x = static_cast<uint16_t>(w), h.y = static_cast<uint16_t>(w >> 16);
    return __half22float2(__half2(h));
  }
}

// Two FP8 E4M3 weights (the low byte first), as fp32 (unscaled): exact, as WTraits::to_f32.
__device__ __forceinline__ float2 fp8x2_to_float2(uint32_t bits) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(bits & 0xFFFFu), __NV_E4M3);
  return __half22float2(__half2(h));
}

// Weights [4c, 4c + 4) of a 16-byte load of float type T, as fp32 (unscaled); c < 16 / (4 · sizeof element).
template <WType T>
__device__ __forceinline__ float4 four_weights(const uint4& raw, int c) {
  if constexpr (T == WType::kF32) {
    return make_float4(__uint_as_float(raw.x), __uint_as_float(raw.y), __uint_as_float(raw.z), __uint_as_float(raw.w));
  } else if constexpr (T == WType::kF8E4M3) {
    const uint32_t w = word(raw, c);
    const float2 lo = fp8x2_to_float2(w), hi = fp8x2_to_float2(w >> 16);
    return make_float4(lo.x, lo.y, hi.x, hi.y);
  } else {
    const float2 lo = word_to_float2<T>(word(raw, 2 * c)), hi = word_to_float2<T>(word(raw, 2 * c + 1));
    return make_float4(lo.x, lo.y, hi.x, hi.y);
  }
}

// float(w[i]) (without the scale) of a weight of runtime type t; float types only (kInt4: int4_weight_at).
__device__ __forceinline__ float load_weight(const void* w, WType t, int64_t i) {
  switch (t) {
    case WType::kF32: return static_cast<const float*>(w)[i];
    case WType::kBF16: return WTraits<WType::kBF16>::to_f32(static_cast<const uint16_t*>(w)[i]);
    case WType::kF16: return WTraits<WType::kF16>::to_f32(static_cast<const uint16_t*>(w)[i]);
    case WType::kF8E4M3: return WTraits<WType::kF8E4M3>::to_f32(static_cast<const uint8_t*>(w)[i]);
    case WType::kInt4: break;  // needs the group's scale
  }
  return 0.0f;
}

__device__ __forceinline__ float bf16_bits_to_f32(uint16_t bits) {
  return __uint_as_float(static_cast<uint32_t>(bits) << 16);
}

// Element (row, col) of a kInt4 weight of `cols` columns, by core/int4.h's rule: s * (code - 8) (exact), or
// s * code + m with the product exact and one rounding of the sum (no fused multiply-add, as the CPU).
__device__ __forceinline__ float int4_weight_at(const DevWeight& w, int64_t row, int64_t col, int64_t cols) {
  const uint8_t byte = static_cast<const uint8_t*>(w.w)[(row * cols + col) / 2];
  const int code = (byte >> ((col % 2) * 4)) & 0xF;
  const int64_t g = row * (cols / w.group_size) + col / w.group_size;
  const float s = bf16_bits_to_f32(w.int4_scales[g]);
  if (w.int4_offsets == nullptr) return s * static_cast<float>(code - 8);
  return __fadd_rn(__fmul_rn(s, static_cast<float>(code)), bf16_bits_to_f32(w.int4_offsets[g]));
}

__device__ __forceinline__ float silu(float v) { return v / (1.0f + expf(-v)); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Calls f(std::integral_constant-like tag) with the weight type as a template argument.
template <WType T>
struct WTag {
  static constexpr WType value = T;
};
template <typename F>
cudaError_t dispatch_wtype(WType t, F&& f) {
  switch (t) {
    case WType::kF32: return f(WTag<WType::kF32>{});
    case WType::kBF16: return f(WTag<WType::kBF16>{});
    case WType::kF16: return f(WTag<WType::kF16>{});
    case WType::kF8E4M3: return f(WTag<WType::kF8E4M3>{});
    case WType::kInt4: break;  // kernels of its own (matmul.cu)
  }
  return cudaErrorInvalidValue;
}

inline unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

// store(i, load(i)) for i in [tid, n) step `threads`, kBatch loads in flight a thread: the loads of a batch are
// issued before any store, so a thread waits for memory n / (threads * kBatch) times, not n / threads.
template <int kBatch, typename Load, typename Store>
__device__ __forceinline__ void batched_copy(int n, int tid, int threads, Load load, Store store) {
  for (int i0 = tid; i0 < n; i0 += kBatch * threads) {
    decltype(load(0)) v[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int i = i0 + b * threads;
      if (i < n) v[b] = load(i);
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int i = i0 + b * threads;
      if (i < n) store(i, v[b]);
    }
  }
}

// MLA key tiles: the cache row of each of a tile's n_tile keys from key j0 of a sequence (block table `table`),
// -1 past its n_keys, written by the block's first n_tile threads.
__device__ __forceinline__ void tile_key_rows(const MlaLaunch& a, const int32_t* table, int32_t j0, int n_keys,
                                              int n_tile, int64_t* key_row) {
  const int tid = static_cast<int>(threadIdx.x);
  if (tid < n_tile) {
    const int32_t j = j0 + tid;
    key_row[tid] = tid < n_keys ? static_cast<int64_t>(table[j / a.block_size]) * a.block_size + j % a.block_size : -1;
  }
}

}  // namespace quatre::cuda
