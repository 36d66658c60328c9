// CudaBackend::summarize_logits against CpuBackend::summarize_logits (itself tested against a brute-force reference in
// tests/engine/test_sampling_summary.cpp) on the same rows of V = 131072: R in {1, 7, 64}, k in {1, 64, 256}, with
// ties (values on a grid), -infinity entries, signed zeros, an all -infinity row, rows left alone (k = 0), stacked
// edits and every temperature kind. Ids, candidate logits, counts and the edited rows exactly; sums within 1e-12
// relative. Skips without a GPU.
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "cuda_test_fixture.h"

namespace quatre::cuda {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int64_t kVocab = 131072;

struct Case {
  std::vector<float> logits;  // [R, V]
  std::vector<LogitEdit> edits;
  std::vector<RowSummaryArgs> args;
};

Case random_case(int64_t R, int32_t k, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  Case c;
  c.logits.resize(static_cast<size_t>(R * kVocab));
  const float temps[] = {1.0f, 0.7f, 0.0f, 1.3f, 0.05f};
  for (int64_t r = 0; r < R; ++r) {
    const bool grid = r % 3 == 1;                    // many ties
    const float p_inf = r % 5 == 2 ? 0.999f : 0.01f;  // a few finite logits only
    for (int64_t i = 0; i < kVocab; ++i) {
      float x = normal(rng);
      if (grid) x = std::round(x * 4.0f) / 4.0f;
      if (unit(rng) < 0.01f) x = unit(rng) < 0.5f ? 0.0f : -0.0f;
      if (unit(rng) < p_inf) x = kNegInf;
      c.logits[static_cast<size_t>(r * kVocab + i)] = x;
    }
    if (R > 1 && r == R - 1) std::fill_n(c.logits.begin() + r * kVocab, kVocab, kNegInf);
    const bool left_alone = R > 1 && r % 6 == 3;
    c.args.push_back({.k = left_alone ? 0 : k, .temperature = temps[r % 5]});
    std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(kVocab - 1));
    std::vector<LogitEdit> row_edits;
    for (int n = 0; n < 50; ++n) {
      const int32_t i = n < 10 ? n : id(rng);  // low ids: some stack on each other below
      row_edits.push_back({.row = static_cast<int32_t>(r), .id = i, .rep = n % 2 == 0 ? 1.3f : 1.0f, .add = n % 3 == 0 ? 0.0f : -0.5f + unit(rng)});
      if (n % 4 == 0) row_edits.push_back({.row = static_cast<int32_t>(r), .id = i, .rep = 1.0f, .add = 2.0f});  // a logit bias after it
    }
    std::stable_sort(row_edits.begin(), row_edits.end(), [](const LogitEdit& a, const LogitEdit& b) { return a.id < b.id; });
    c.edits.insert(c.edits.end(), row_edits.begin(), row_edits.end());
  }
  return c;
}

using CudaSampling = CudaVsCpu;

TEST_F(CudaSampling, SummaryMatchesTheCpuBackend) {
  for (const int64_t R : {int64_t{1}, int64_t{7}, int64_t{64}}) {
    for (const int32_t k : {1, 64, 256}) {
      Case c = random_case(R, k, static_cast<uint64_t>(R * 1000 + k));
      dev_arena_->reset();
      Tensor dev = up(c.logits, {R, kVocab});
      const LogitsSummary got = gpu_->summarize_logits(dev, c.edits, c.args, *dev_arena_);
      const LogitsSummary want = cpu_.summarize_logits(Tensor(c.logits.data(), DType::F32, {R, kVocab}), c.edits, c.args, host_arena_);
      std::vector<float> edited(c.logits.size());
      gpu_->copy_to_host(dev, edited.data());
      for (size_t i = 0; i < edited.size(); ++i) {
        ASSERT_EQ(std::bit_cast<uint32_t>(edited[i]), std::bit_cast<uint32_t>(c.logits[i])) << "edited logit " << i << ", R " << R << ", k " << k;
      }
      ASSERT_EQ(got.stride, want.stride);
      for (int64_t r = 0; r < R; ++r) {
        const LogitsSummary::Row g = got.row(r), w = want.row(r);
        const std::string where = "R " + std::to_string(R) + ", k " + std::to_string(k) + ", row " + std::to_string(r);
        EXPECT_EQ(g.stats.n_finite, w.stats.n_finite) << where;
        ASSERT_EQ(g.stats.n_top, w.stats.n_top) << where;
        EXPECT_EQ(g.stats.max_logit, w.stats.max_logit) << where;
        for (size_t i = 0; i < w.ids.size(); ++i) {
          ASSERT_EQ(g.ids[i], w.ids[i]) << where << " rank " << i;
          ASSERT_EQ(g.logits[i], w.logits[i]) << where << " rank " << i;
        }
        EXPECT_NEAR(g.stats.sum_exp, w.stats.sum_exp, 1e-12 * w.stats.sum_exp) << where;
        EXPECT_NEAR(g.stats.log_sum_exp, w.stats.log_sum_exp, 1e-12 * std::max(1.0, std::abs(w.stats.log_sum_exp))) << where;
      }
    }
  }
}

TEST_F(CudaSampling, EveryRowTiedAndAFewRowsOfOneValue) {
  // A row of one value everywhere: the top k are ids 0..k-1; a row of two values: the larger first, by id.
  const int64_t R = 3;
  std::vector<float> l(static_cast<size_t>(R * kVocab), 1.5f);
  for (int64_t i = 0; i < kVocab; ++i) l[static_cast<size_t>(kVocab + i)] = i % 1000 == 999 ? 2.0f : -1.0f;
  for (int64_t i = 0; i < kVocab; ++i) l[static_cast<size_t>(2 * kVocab + i)] = i % 2 == 0 ? 0.0f : -0.0f;
  const std::vector<RowSummaryArgs> args(R, RowSummaryArgs{.k = 256, .temperature = 1.0f});
  Tensor dev = up(l, {R, kVocab});
  const LogitsSummary got = gpu_->summarize_logits(dev, {}, args, *dev_arena_);
  for (int32_t i = 0; i < 256; ++i) {
    EXPECT_EQ(got.row(0).ids[static_cast<size_t>(i)], i);
    EXPECT_EQ(got.row(1).ids[static_cast<size_t>(i)], i < 131 ? 999 + 1000 * i : i - 131) << i;  // 131 values of 2, then ids 0.. of -1
    EXPECT_EQ(got.row(2).ids[static_cast<size_t>(i)], i);  // -0 and +0 are one value
  }
  EXPECT_NEAR(got.row(0).stats.sum_exp, static_cast<double>(kVocab), 1e-9);
}

TEST_F(CudaSampling, PrintsTheTimeOfABatchOf256Rows) {  // informative: a decode batch's summary against its download
  const int64_t R = 256;
  Case c = random_case(R, 64, 5);
  Tensor dev = up(c.logits, {R, kVocab});
  std::vector<float> downloaded(c.logits.size());
  for (int rep = 0; rep < 2; ++rep) {  // the first round warms up
    cudaEvent_t t0, t1, t2;
    cudaEventCreate(&t0), cudaEventCreate(&t1), cudaEventCreate(&t2);
    cudaEventRecord(t0);
    (void)gpu_->summarize_logits(dev, {}, c.args, *dev_arena_);
    cudaEventRecord(t1);
    gpu_->copy_to_host(dev, downloaded.data());
    cudaEventRecord(t2);
    cudaEventSynchronize(t2);
    float summary_ms = 0, copy_ms = 0;
    cudaEventElapsedTime(&summary_ms, t0, t1);
    cudaEventElapsedTime(&copy_ms, t1, t2);
    if (rep == 1) std::printf("R=256 V=131072 k=64: summarize_logits %.3f ms (with its download), copy_to_host of the logits %.3f ms\n", summary_ms, copy_ms);
  }
}

}  // namespace
}  // namespace quatre::cuda
