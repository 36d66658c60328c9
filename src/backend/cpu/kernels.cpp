// The CPU backend's inner loops: weight dequantisation and the threaded fp32 matmul. Depends on core.
#include "backend/cpu/kernels.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "core/int4.h"

namespace quatre::cpu {

const float* fp8_e4m3_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int b = 0; b < 256; ++b) t[static_cast<size_t>(b)] = fp8e4m3_to_f32(static_cast<uint8_t>(b));
    return t;
  }();
  return table.data();
}

void dequant_row(const Weight& w, int64_t row, float* out) {
  const int64_t cols = weight_cols(w);
  if (w.int4) {
    const Int4Weight& q = *w.int4;
    const int64_t n_groups = cols / q.group_size;
    const auto* scales = static_cast<const uint16_t*>(q.scales.data()) + row * n_groups;
    const auto* offsets = q.is_symmetric() ? nullptr : static_cast<const uint16_t*>(q.offsets.data()) + row * n_groups;
    dequantize_int4_row(static_cast<const uint8_t*>(w.w.data()) + row * (cols / 2), scales, offsets, cols, q.group_size,
                        out);
    return;
  }
  const float scale = w.weight_scale;
  const size_t first = static_cast<size_t>(row * cols);
  switch (w.w.dtype()) {
    case DType::F32: {
      const float* src = static_cast<const float*>(w.w.data()) + first;
      for (int64_t i = 0; i < cols; ++i) out[i] = src[i] * scale;
      return;
    }
    case DType::BF16: {
      const auto* src = static_cast<const uint16_t*>(w.w.data()) + first;
      for (int64_t i = 0; i < cols; ++i) {
        const uint32_t bits = uint32_t{src[i]} << 16;
        float v;
        std::memcpy(&v, &bits, 4);
        out[i] = v * scale;
      }
      return;
    }
    case DType::F16: {
      const auto* src = static_cast<const uint16_t*>(w.w.data()) + first;
      for (int64_t i = 0; i < cols; ++i) out[i] = f16_to_f32(src[i]) * scale;
      return;
    }
    case DType::F8_E4M3: {
      const float* table = fp8_e4m3_table();
      const auto* src = static_cast<const uint8_t*>(w.w.data()) + first;
      for (int64_t i = 0; i < cols; ++i) out[i] = table[src[i]] * scale;
      return;
    }
    default:
      CHECK(false) << "weight of dtype " << dtype_name(w.w.dtype()) << " is not a float type";
  }
}

float silu(float x) { return x / (1.0f + std::exp(-x)); }

void softmax_inplace(float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) m = std::fmax(m, x[i]);
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - m);
    sum += x[i];
  }
  for (int64_t i = 0; i < n; ++i) x[i] /= sum;
}

void matmul_f32(ThreadPool& pool, const float* x, int64_t M, int64_t in, const Weight& w, float* y, float* scratch) {
  const int64_t out = weight_rows(w);
  CHECK(weight_cols(w) == in) << "matmul: x has " << in << " columns, weight is " << w.w.shape_string();
  // Each output row of w is dequantised once and reused for all M rows of x.
  const int64_t min_rows = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, M * in));
  pool.parallel_for(out, min_rows, [&](int64_t begin, int64_t end, int worker) {
    float* row = scratch + static_cast<size_t>(worker) * static_cast<size_t>(in);
    for (int64_t o = begin; o < end; ++o) {
      dequant_row(w, o, row);
      for (int64_t m = 0; m < M; ++m) y[m * out + o] = dot(x + m * in, row, in);
    }
  });
}

}  // namespace quatre::cpu
