// CpuBackend's vision-tower ops (core/backend.h) against float64 evaluations of MODEL.md §7.3-§7.6: Pixtral's 2-D
// RoPE in both q/k row orders (each pair turned by the row's or the column's angle), attention inside segments
// (a row never sees another segment's), the exact GELU; and their argument checks.
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "../backend_test_util.h"
#include "backend/cpu/cpu_backend.h"
#include "core/error.h"

namespace quatre::cpu {
namespace {

using backend_test::host_tensor;
using backend_test::randn;
using backend_test::to_vector;

class CpuVisionOps : public testing::Test {
 protected:
  CpuBackend be_{3};  // odd thread count: uneven ranges
  Arena arena_{host_memory(), {.poison = true}};
};

std::vector<float> pixtral_freq(int64_t dh) {  // theta^(-2j/dh), theta = 10000
  std::vector<float> f;
  for (int64_t j = 0; j < dh / 2; ++j) f.push_back(static_cast<float>(std::pow(10000.0, -2.0 * static_cast<double>(j) / static_cast<double>(dh))));
  return f;
}

TEST_F(CpuVisionOps, Rope2dTurnsEachPairByItsRowOrColumnAngle) {
  const int64_t H = 2, dh = 16, N = 5;
  const std::vector<float> freq = pixtral_freq(dh);
  const std::vector<int32_t> rows = {0, 0, 3, 7, 109}, cols = {0, 5, 2, 7, 109};
  for (bool half : {false, true}) {
    SCOPED_TRACE(half ? "rotate-half pairs" : "interleaved pairs");
    std::vector<float> q = randn(static_cast<size_t>(N * H * dh), 1), k = randn(static_cast<size_t>(N * H * dh), 2);
    const std::vector<float> q0 = q, k0 = k;
    be_.rope_2d(host_tensor(q, {N, H * dh}), host_tensor(k, {N, H * dh}),
                {.freq = freq, .rows = rows, .cols = cols, .n_heads = H, .head_dim = dh, .half_pairs = half});
    for (int64_t t = 0; t < N; ++t) {
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t j = 0; j < dh / 2; ++j) {
          // pair j < dh/4: the row's angle at frequency 2j; then the column's at 2(j - dh/4) + 1
          const double angle = j < dh / 4 ? rows[static_cast<size_t>(t)] * static_cast<double>(freq[static_cast<size_t>(2 * j)])
                                          : cols[static_cast<size_t>(t)] * static_cast<double>(freq[static_cast<size_t>(2 * (j - dh / 4) + 1)]);
          const int64_t a = t * H * dh + h * dh + (half ? j : 2 * j), b = t * H * dh + h * dh + (half ? j + dh / 2 : 2 * j + 1);
          const double tol = 2e-6 + 110 * std::ldexp(1.0, -22);  // the fp32 angle's rounding at 110 patches
          for (const auto& [got, x] : {std::pair{&q, &q0}, std::pair{&k, &k0}}) {
            const double x0 = (*x)[static_cast<size_t>(a)], x1 = (*x)[static_cast<size_t>(b)];
            ASSERT_NEAR((*got)[static_cast<size_t>(a)], x0 * std::cos(angle) - x1 * std::sin(angle), tol) << t << " " << h << " " << j;
            ASSERT_NEAR((*got)[static_cast<size_t>(b)], x1 * std::cos(angle) + x0 * std::sin(angle), tol) << t << " " << h << " " << j;
          }
        }
      }
    }
  }
}

TEST_F(CpuVisionOps, SegmentAttentionMatchesFloat64AndStaysInsideSegments) {
  const int64_t H = 3, dh = 8, N = 40;
  const std::vector<int32_t> bounds = {0, 1, 17, 40};
  std::vector<float> q = randn(static_cast<size_t>(N * H * dh), 3), k = randn(static_cast<size_t>(N * H * dh), 4),
                     v = randn(static_cast<size_t>(N * H * dh), 5);
  const float scale = 1.0f / std::sqrt(static_cast<float>(dh));
  const std::vector<float> got = to_vector(be_.segment_attention(
      {.q = host_tensor(q, {N, H * dh}), .k = host_tensor(k, {N, H * dh}), .v = host_tensor(v, {N, H * dh}),
       .segment_begin = bounds, .n_heads = H, .scale = scale},
      arena_));
  for (size_t s = 0; s + 1 < bounds.size(); ++s) {
    for (int64_t t = bounds[s]; t < bounds[s + 1]; ++t) {
      for (int64_t h = 0; h < H; ++h) {
        std::vector<double> p;
        double mx = -INFINITY, sum = 0;
        for (int64_t u = bounds[s]; u < bounds[s + 1]; ++u) {
          double d = 0;
          for (int64_t i = 0; i < dh; ++i) d += static_cast<double>(q[static_cast<size_t>(t * H * dh + h * dh + i)]) * k[static_cast<size_t>(u * H * dh + h * dh + i)];
          p.push_back(d * scale);
          mx = std::max(mx, p.back());
        }
        for (double& e : p) sum += (e = std::exp(e - mx));
        for (int64_t i = 0; i < dh; ++i) {
          double o = 0;
          for (int64_t u = bounds[s]; u < bounds[s + 1]; ++u) o += p[static_cast<size_t>(u - bounds[s])] * v[static_cast<size_t>(u * H * dh + h * dh + i)];
          ASSERT_NEAR(got[static_cast<size_t>(t * H * dh + h * dh + i)], o / sum, 1e-5) << "row " << t << " head " << h;
        }
      }
    }
  }
  // a one-row segment is that row's own value
  for (int64_t i = 0; i < H * dh; ++i) EXPECT_EQ(got[static_cast<size_t>(i)], v[static_cast<size_t>(i)]);
}

TEST_F(CpuVisionOps, GeluIsTheErfForm) {
  std::vector<float> x = {-10.0f, -3.0f, -1.0f, -0.25f, 0.0f, 0.5f, 1.0f, 2.5f, 8.0f};
  const std::vector<float> x0 = x;
  be_.gelu(host_tensor(x, {3, 3}));
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = 0.5 * x0[i] * (1.0 + std::erf(x0[i] / std::sqrt(2.0)));
    EXPECT_NEAR(x[i], want, 1e-6 * std::max(1.0, std::abs(want))) << x0[i];
  }
}

TEST_F(CpuVisionOps, BadArgumentsAreInvalidRequests) {
  const int64_t H = 2, dh = 8, N = 6;
  std::vector<float> q = randn(static_cast<size_t>(N * H * dh), 6), k = q, v = q;
  const Tensor qt = host_tensor(q, {N, H * dh}), kt = host_tensor(k, {N, H * dh}), vt = host_tensor(v, {N, H * dh});
  const float scale = 0.5f;
  for (const std::vector<int32_t>& bounds : std::vector<std::vector<int32_t>>{{0}, {0, 3}, {1, 6}, {0, 4, 4, 6}, {0, 5, 3, 6}}) {
    EXPECT_THROW(be_.segment_attention({.q = qt, .k = kt, .v = vt, .segment_begin = bounds, .n_heads = H, .scale = scale}, arena_),
                 InvalidRequest);
  }
  const std::vector<int32_t> whole = {0, N};
  EXPECT_THROW(be_.segment_attention({.q = qt, .k = kt, .v = vt, .segment_begin = whole, .n_heads = 3, .scale = scale}, arena_),
               InvalidRequest);
  EXPECT_THROW(be_.segment_attention({.q = qt, .k = host_tensor(k, {N - 1, H * dh}), .v = vt, .segment_begin = whole,
                                      .n_heads = H, .scale = scale}, arena_),
               InvalidRequest);
  const std::vector<float> freq = pixtral_freq(dh);
  const std::vector<int32_t> pos(static_cast<size_t>(N), 0);
  EXPECT_THROW(be_.rope_2d(qt, kt, {.freq = freq, .rows = pos, .cols = pos, .n_heads = H, .head_dim = 6}), InvalidRequest);
  EXPECT_THROW(be_.rope_2d(qt, kt, {.freq = freq, .rows = pos, .cols = whole, .n_heads = H, .head_dim = dh}), InvalidRequest);
  EXPECT_NO_THROW(be_.rope_2d(qt, kt, {.freq = freq, .rows = pos, .cols = pos, .n_heads = H, .head_dim = dh}));
}

}  // namespace
}  // namespace quatre::cpu
