// ThreadCommunicator: the collectives against sums and copies computed here, on every rank; a failing rank makes the
// others throw rather than wait; a disagreement on shapes is an error, not a silent mix.
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <vector>

#include <gtest/gtest.h>

#include "core/dtype.h"
#include "parallel/thread_communicator.h"

namespace quatre::parallel {
namespace {

// Rank r's value at i: distinct per rank and index, not exactly representable sums included.
float value(int r, int64_t i) { return 0.1f * static_cast<float>(r + 1) + 0.37f * static_cast<float>(i) - 2.0f; }

TEST(ThreadCommunicator, AllReduceSumsF32InRankOrderOnEveryRank) {
  constexpr int kRanks = 3;
  constexpr int64_t kN = 1000;
  std::vector<std::vector<float>> got(kRanks);
  run_ranks(kRanks, [&](int r, Communicator& comm) {
    EXPECT_EQ(comm.rank(), r);
    EXPECT_EQ(comm.size(), kRanks);
    std::vector<float> x(kN);
    for (int64_t i = 0; i < kN; ++i) x[static_cast<size_t>(i)] = value(r, i);
    comm.all_reduce_sum(Tensor(x.data(), DType::F32, {kN}));
    got[static_cast<size_t>(r)] = x;
  });
  for (int64_t i = 0; i < kN; ++i) {
    float want = 0;
    for (int r = 0; r < kRanks; ++r) want += value(r, i);
    for (int r = 0; r < kRanks; ++r) ASSERT_EQ(got[static_cast<size_t>(r)][static_cast<size_t>(i)], want) << "rank " << r << " at " << i;
  }
}

TEST(ThreadCommunicator, AllReduceSumsBF16RoundedOnce) {
  constexpr int kRanks = 2;
  constexpr int64_t kN = 64;
  std::vector<std::vector<uint16_t>> got(kRanks);
  run_ranks(kRanks, [&](int r, Communicator& comm) {
    std::vector<uint16_t> x(kN);
    for (int64_t i = 0; i < kN; ++i) x[static_cast<size_t>(i)] = f32_to_bf16(value(r, i));
    comm.all_reduce_sum(Tensor(x.data(), DType::BF16, {8, 8}));
    got[static_cast<size_t>(r)] = x;
  });
  for (int64_t i = 0; i < kN; ++i) {
    const float want = bf16_to_f32(f32_to_bf16(value(0, i))) + bf16_to_f32(f32_to_bf16(value(1, i)));
    EXPECT_EQ(got[0][static_cast<size_t>(i)], f32_to_bf16(want)) << i;
    EXPECT_EQ(got[1][static_cast<size_t>(i)], got[0][static_cast<size_t>(i)]) << i;
  }
}

TEST(ThreadCommunicator, AllGatherColsPutsRankRAtItsColumns) {
  constexpr int kRanks = 4;
  constexpr int64_t kM = 3, kC = 5;
  std::vector<std::vector<float>> got(kRanks);
  run_ranks(kRanks, [&](int r, Communicator& comm) {
    std::vector<float> local(kM * kC), out(kM * kC * kRanks, -1.0f);
    for (int64_t m = 0; m < kM; ++m) {
      for (int64_t j = 0; j < kC; ++j) local[static_cast<size_t>(m * kC + j)] = static_cast<float>(1000 * m + r * kC + j);
    }
    comm.all_gather_cols(Tensor(local.data(), DType::F32, {kM, kC}), Tensor(out.data(), DType::F32, {kM, kC * kRanks}));
    got[static_cast<size_t>(r)] = out;
  });
  for (int r = 0; r < kRanks; ++r) {
    for (int64_t m = 0; m < kM; ++m) {
      for (int64_t col = 0; col < kC * kRanks; ++col) {
        ASSERT_EQ(got[static_cast<size_t>(r)][static_cast<size_t>(m * kC * kRanks + col)], static_cast<float>(1000 * m + col))
            << "rank " << r << " row " << m << " col " << col;
      }
    }
  }
}

TEST(ThreadCommunicator, DispatchKeepsTheShardsPairsWithLocalIds) {
  Arena a;
  std::vector<int32_t> ids = {0, 5, 3, 4, 7, 2};  // [3,2] over 8 experts
  std::vector<float> gates = {0.6f, 0.4f, 0.9f, 0.1f, 0.5f, 0.5f};
  const Routing r{.expert_ids = Tensor(ids.data(), DType::I32, {3, 2}), .gates = Tensor(gates.data(), DType::F32, {3, 2})};
  const Routing out = dispatch_on_host(r, {.first = 4, .count = 4}, a);  // experts 4..7
  const std::vector<int32_t> want_ids = {0, 1, 0, 0, 3, 0};
  const std::vector<float> want_gates = {0.0f, 0.4f, 0.0f, 0.1f, 0.5f, 0.0f};
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(out.expert_ids.data_as<int32_t>()[i], want_ids[i]) << i;
    EXPECT_EQ(out.gates.data_as<float>()[i], want_gates[i]) << i;
  }
}

TEST(ThreadCommunicator, AFailingRankMakesTheOthersThrowNotWait) {
  std::atomic<int> aborted{0};
  const auto start = std::chrono::steady_clock::now();
  try {
    run_ranks(3, [&](int r, Communicator& comm) {
      if (r == 1) throw std::runtime_error("rank 1 failed to load");
      std::vector<float> x(4, 1.0f);
      try {
        comm.all_reduce_sum(Tensor(x.data(), DType::F32, {4}));
      } catch (const GroupAborted&) {
        ++aborted;
        throw;
      }
    });
    FAIL() << "run_ranks returned";
  } catch (const GroupAborted&) {
    FAIL() << "the abort, not the cause, was rethrown";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "rank 1 failed to load");
  }
  EXPECT_EQ(aborted.load(), 2);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

// Ranks calling one collective with different shapes break the SPMD invariant: a CHECK, not a silent mix.
TEST(ThreadCommunicatorDeathTest, RanksThatDisagreeOnTheShapeAbort) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(run_ranks(2,
                         [&](int r, Communicator& comm) {
                           std::vector<float> x(static_cast<size_t>(4 + r), 1.0f);
                           comm.all_reduce_sum(Tensor(x.data(), DType::F32, {4 + r}));
                         }),
               "all_reduce_sum: rank [01] passed [45] F32 values");
}

TEST(ThreadCommunicator, GroupOfZeroIsAnError) { EXPECT_THROW(ThreadGroup(0), InvalidRequest); }

}  // namespace
}  // namespace quatre::parallel
