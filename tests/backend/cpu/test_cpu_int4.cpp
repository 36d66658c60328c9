// CpuBackend on 4-bit weights (core/int4.h): matmul, the FFN and the MoE expert path on int4 weights give
// bit-for-bit the results of the same ops on the dequantised weights stored as F32, and matmul meets the naive
// oracle (ref::matmul, which reads one 4-bit element at a time through int4_value); with bf16 or q8 activations the
// matmul is the exact one of x rounded so (core/int4.h), on 4-bit weights only.
#include <array>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "../backend_test_util.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/ref_ops.h"
#include "core/int4.h"

namespace quatre::cpu {
namespace {

using backend_test::randn;
using backend_test::to_vector;

// A [out, in] weight quantised to 4 bits, and the same values dequantised into an F32 weight.
struct Int4Pair {
  Int4Pair(int64_t out, int64_t in, int64_t group_size, bool is_symmetric, uint64_t seed)
      : q(out, in, group_size, is_symmetric, seed, 0.05f), int4(q.weight), dequantized(static_cast<size_t>(out * in)) {
    const int64_t n_groups = in / group_size;
    for (int64_t o = 0; o < out; ++o) {
      dequantize_int4_row(q.codes.data() + o * in / 2, q.scales.data() + o * n_groups,
                          is_symmetric ? nullptr : q.offsets.data() + o * n_groups, in, group_size, dequantized.data() + o * in);
    }
    f32.w = Tensor(dequantized.data(), DType::F32, {out, in});
  }
  backend_test::Int4Host q;
  Weight int4;
  std::vector<float> dequantized;
  Weight f32;
};

class CpuInt4 : public testing::TestWithParam<bool> {  // symmetric or not
 protected:
  CpuBackend be_{2};
  Arena arena_{host_memory(), {.poison = true}};
};

TEST_P(CpuInt4, MatmulEqualsMatmulOnTheDequantizedWeight) {
  for (const auto& [M, out, in, G] : {std::array<int64_t, 4>{1, 37, 256, 128}, {17, 64, 96, 32}, {3, 5, 64, 2}}) {
    const Int4Pair w(out, in, G, GetParam(), static_cast<uint64_t>(out * in));
    std::vector<float> x = randn(static_cast<size_t>(M * in), 99);
    const Tensor xt(x.data(), DType::F32, {M, in});
    const std::vector<float> got = to_vector(be_.matmul(xt, w.int4, arena_));
    EXPECT_EQ(got, to_vector(be_.matmul(xt, w.f32, arena_))) << M << "x" << in << " by " << out << ", group " << G;
    const std::vector<float> want = ref::matmul(x, M, w.int4);  // element by element through int4_value
    ASSERT_EQ(want, ref::matmul(x, M, w.f32));
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5 * (1 + std::fabs(want[i]))) << i;
  }
}

// CpuBackend(n, bf16 / q8): a 4-bit matmul is the exact one of each row of x rounded by round_int4_activations
// (rows of 70: one q8 block shorter than kQ8Block), bit for bit, and not the exact one of x; other weights take x as
// it is.
TEST_P(CpuInt4, RoundedActivationsAreTheMatmulOfRoundedX) {
  const int64_t M = 3, in = 70, out = 9;
  const Int4Pair w(out, in, 2, GetParam(), 31);
  std::vector<float> x = randn(static_cast<size_t>(M * in), 32);
  const Tensor xt(x.data(), DType::F32, {M, in});
  const std::vector<float> exact = to_vector(be_.matmul(xt, w.int4, arena_));
  for (Int4Activations mode : {Int4Activations::kBf16, Int4Activations::kQ8}) {
    CpuBackend rounding{2, mode};
    std::vector<float> xr = x;
    for (int64_t m = 0; m < M; ++m) round_int4_activations(xr.data() + m * in, in, mode);
    const std::vector<float> got = to_vector(rounding.matmul(xt, w.int4, arena_));
    EXPECT_EQ(got, to_vector(be_.matmul(Tensor(xr.data(), DType::F32, {M, in}), w.int4, arena_)));
    EXPECT_NE(got, exact);
    EXPECT_EQ(to_vector(rounding.matmul(xt, w.f32, arena_)), to_vector(be_.matmul(xt, w.f32, arena_)));
  }
}

TEST_P(CpuInt4, MoeOnInt4ExpertsEqualsMoeOnDequantizedExperts) {
  const int64_t T = 9, D = 64, F = 32, E = 4, G = 32;
  std::vector<Int4Pair> pairs;
  pairs.reserve(3 * (E + 1));
  for (int64_t e = 0; e < E + 1; ++e) {  // the last is the shared expert
    pairs.emplace_back(F, D, G, GetParam(), 10 * e + 1);
    pairs.emplace_back(F, D, G, GetParam(), 10 * e + 2);
    pairs.emplace_back(D, F, G, GetParam(), 10 * e + 3);
  }
  std::vector<FfnWeights> int4_experts, f32_experts;
  for (int64_t e = 0; e < E + 1; ++e) {
    const Int4Pair* p = &pairs[static_cast<size_t>(3 * e)];
    int4_experts.push_back({p[0].int4, p[1].int4, p[2].int4});
    f32_experts.push_back({p[0].f32, p[1].f32, p[2].f32});
  }
  std::vector<float> x = randn(static_cast<size_t>(T * D), 5);
  std::vector<float> router_logits = randn(static_cast<size_t>(T * E), 6);
  const Tensor xt(x.data(), DType::F32, {T, D});
  const Routing r = be_.route(Tensor(router_logits.data(), DType::F32, {T, E}), {.n_experts_per_tok = 2}, arena_);
  auto moe = [&](const std::vector<FfnWeights>& experts) {
    return to_vector(be_.moe({.x = xt, .routing = r, .experts = std::span(experts.data(), E), .shared = &experts.back()}, arena_));
  };
  const std::vector<float> got = moe(int4_experts);
  EXPECT_EQ(got, moe(f32_experts));
  double norm = 0;
  for (float v : got) norm += double(v) * v;
  EXPECT_GT(norm, 0.0);  // the experts did contribute
}

INSTANTIATE_TEST_SUITE_P(Symmetry, CpuInt4, testing::Bool(),
                         [](const testing::TestParamInfo<bool>& i) { return i.param ? "Symmetric" : "Asymmetric"; });

}  // namespace
}  // namespace quatre::cpu
