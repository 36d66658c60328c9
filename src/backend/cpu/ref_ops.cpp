// Naive fp32 reference loops for the CPU backend tests. Depends on core only.
#include "backend/cpu/ref_ops.h"

#include <cmath>

#include "core/int4.h"

namespace quatre::cpu::ref {
namespace {

int64_t logical_cols(const Weight& w) { return w.int4 ? 2 * w.w.dim(1) : w.w.dim(1); }

// Element i of the weight in row-major [out, in] order; a 4-bit one by int4_value, one element at a time.
float weight_at(const Weight& w, int64_t i) {
  if (!w.int4) return load_as_f32(w.w.data(), w.w.dtype(), static_cast<size_t>(i)) * w.weight_scale;
  const Int4Weight& q = *w.int4;
  const int64_t in = logical_cols(w), row = i / in, col = i % in;
  const int64_t group = row * (in / q.group_size) + col / q.group_size;
  const uint8_t code = int4_code(static_cast<const uint8_t*>(w.w.data()) + row * (in / 2), col);
  const uint16_t scale = static_cast<const uint16_t*>(q.scales.data())[group];
  const uint16_t offset = q.is_symmetric() ? 0 : static_cast<const uint16_t*>(q.offsets.data())[group];
  return int4_value(code, scale, offset, q.is_symmetric());
}

}  // namespace

std::vector<float> matmul(const std::vector<float>& x, int64_t M, const Weight& w) {
  const int64_t out = w.w.dim(0), in = logical_cols(w);
  CHECK(static_cast<int64_t>(x.size()) == M * in) << x.size() << " values for " << M << " rows of " << in;
  std::vector<float> y(static_cast<size_t>(M * out));
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t o = 0; o < out; ++o) {
      float acc = 0;
      for (int64_t i = 0; i < in; ++i) acc += x[static_cast<size_t>(m * in + i)] * weight_at(w, o * in + i);
      y[static_cast<size_t>(m * out + o)] = acc;
    }
  }
  return y;
}

std::vector<float> rms_norm(const std::vector<float>& x, int64_t n, const Weight& g, float eps) {
  std::vector<float> y(x.size());
  for (size_t row = 0; row < x.size() / static_cast<size_t>(n); ++row) {
    float ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += x[row * static_cast<size_t>(n) + static_cast<size_t>(i)] * x[row * static_cast<size_t>(n) + static_cast<size_t>(i)];
    const float r = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
    for (int64_t i = 0; i < n; ++i) {
      const size_t at = row * static_cast<size_t>(n) + static_cast<size_t>(i);
      y[at] = weight_at(g, i) * (x[at] * r);
    }
  }
  return y;
}

std::vector<float> ffn(const std::vector<float>& x, int64_t M, const FfnWeights& w) {
  std::vector<float> g = matmul(x, M, w.gate);
  const std::vector<float> u = matmul(x, M, w.up);
  for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  return matmul(g, M, w.down);
}

}  // namespace quatre::cpu::ref
