// ThreadPool (core/thread_pool.h): every index once, the workers it promises, and a range's exception reaching
// the caller after every range has run (the pool stays usable).
#include "core/thread_pool.h"

#include <atomic>
#include <stdexcept>
#include <vector>

#include <gtest/gtest.h>

namespace quatre {
namespace {

TEST(ThreadPool, CoversEveryIndexOnceWithDistinctWorkers) {
  ThreadPool pool(4);
  for (int64_t n : {1, 3, 4, 5, 1000}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    std::atomic<int> max_worker{0};
    for (int repeat = 0; repeat < 50; ++repeat) {
      pool.parallel_for(n, 1, [&](int64_t begin, int64_t end, int worker) {
        for (int64_t i = begin; i < end; ++i) hits[static_cast<size_t>(i)]++;
        int seen = max_worker.load();
        while (worker > seen && !max_worker.compare_exchange_weak(seen, worker)) {
        }
      });
    }
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(hits[static_cast<size_t>(i)].load(), 50) << "n " << n << " index " << i;
    EXPECT_EQ(max_worker.load(), static_cast<int>(std::min<int64_t>(n, 4)) - 1);
  }
}

TEST(ThreadPool, RethrowsTheFirstErrorAfterEveryRangeRanAndStaysUsable) {
  ThreadPool pool(4);
  for (int thrower : {0, 3}) {  // the calling thread's range, then a worker's
    std::atomic<int> done{0};
    try {
      pool.parallel_for(4, 1, [&](int64_t begin, int64_t, int) {
        if (begin == thrower) throw std::runtime_error("range " + std::to_string(begin));
        ++done;
      });
      ADD_FAILURE() << "no exception from range " << thrower;
    } catch (const std::runtime_error& e) {
      EXPECT_EQ(std::string(e.what()), "range " + std::to_string(thrower));
    }
    EXPECT_EQ(done.load(), 3) << "the other ranges all ran before the rethrow";
  }
  std::atomic<int64_t> sum{0};
  pool.parallel_for(100, 1, [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) sum += i;
  });
  EXPECT_EQ(sum.load(), 4950);
}

}  // namespace
}  // namespace quatre
