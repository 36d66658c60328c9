// Inner loops shared by the CPU backend's ops: dequantising a weight row to fp32, the fp32 dot product, SiLU,
// in-place softmax, and the threaded matmul against a stored weight. Depends on core.
#pragma once

#include <cstdint>
#include <cstring>

#include "core/thread_pool.h"
#include "core/backend.h"

namespace quatre::cpu {

// The fp32 value of every float8_e4m3fn byte (MODEL.md §6.1).
const float* fp8_e4m3_table();

// out[0, cols) = float(w[row, :]) * weight_scale, for a weight viewed as [rows, cols] (a rank-1 weight is one row);
// a 4-bit weight by the rule of core/int4.h.
void dequant_row(const Weight& w, int64_t row, float* out);
// Logical columns: a 4-bit weight's w holds two per byte.
inline int64_t weight_cols(const Weight& w) { return w.int4 ? 2 * w.w.dim(-1) : w.w.dim(-1); }
inline int64_t weight_rows(const Weight& w) { return w.w.rank() == 1 ? 1 : w.w.numel() / w.w.dim(-1); }

// Σ a[i]·b[i] in fp32 with eight partial sums.
inline float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  }
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

float silu(float x);
// x[0, n) <- softmax(x) in fp32: exp(x - max) / Σ.
void softmax_inplace(float* x, int64_t n);

// y [M,out] = x [M,in] · (float(w) * weight_scale)ᵀ with fp32 accumulation, split over output rows.
// scratch: n_threads * in floats.
void matmul_f32(ThreadPool& pool, const float* x, int64_t M, int64_t in, const Weight& w, float* y, float* scratch);

}  // namespace quatre::cpu
