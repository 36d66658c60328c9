// EngineLoop: requests submitted from several threads at once come back equal to their outputs alone,
// admission errors reach the submitter through the future, cancellation and stop() end requests as cancelled.
#include <atomic>
#include <map>
#include <thread>

#include <gtest/gtest.h>

#include "core/error.h"
#include "engine/engine_loop.h"
#include "engine_test_util.h"

namespace quatre::engine {
namespace {


// Collects one request's outputs from the engine thread; wait() blocks until its finish arrives.
class Collector {
 public:
  EngineLoop::OnOutput callback() {
    return [this](const RequestOutput& o) {
      std::lock_guard lock(mutex_);
      if (o.token) ids_.push_back(*o.token);
      if (o.finish) {
        finish_ = *o.finish;
        done_.notify_all();
      }
    };
  }
  std::pair<std::vector<int32_t>, FinishReason> wait() {
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return finish_.has_value(); });
    return {ids_, *finish_};
  }

 private:
  std::mutex mutex_;
  std::condition_variable done_;
  std::vector<int32_t> ids_;
  std::optional<FinishReason> finish_;
};

class EngineLoopTest : public test::TinyModelTest {};

TEST_F(EngineLoopTest, RequestsFromSeveralThreadsEqualTheirOutputsAlone) {
  constexpr int kThreads = 4;
  std::vector<GenerateRequest> requests;
  std::vector<std::vector<int32_t>> want;  // before the loop starts: the backend runs one forward at a time
  for (int i = 0; i < kThreads; ++i) {
    requests.push_back(greedy(ids(5 + 17 * i, 30 + static_cast<uint64_t>(i)), 6 + i));
    want.push_back(generate(*model_, requests.back(), 2, nullptr).ids);
  }
  Engine engine(*model_, {.n_blocks = 64, .block_size = 4, .max_tokens_per_step = 16});
  EngineLoop loop(engine);
  std::vector<Collector> collectors(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] { loop.submit(requests[static_cast<size_t>(i)], collectors[static_cast<size_t>(i)].callback()).get(); });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kThreads; ++i) {
    const auto [got, finish] = collectors[static_cast<size_t>(i)].wait();
    EXPECT_EQ(got, want[static_cast<size_t>(i)]) << "request " << i;
    EXPECT_EQ(finish, FinishReason::kLength);
  }
}

TEST_F(EngineLoopTest, AdmissionErrorsReachTheSubmitter) {
  Engine engine(*model_, {.n_blocks = 4, .block_size = 4});
  EngineLoop loop(engine);
  std::future<int64_t> id = loop.submit(greedy(std::vector<int32_t>(16, 1), 5), nullptr);
  EXPECT_THROW(id.get(), InvalidRequest);
}

TEST_F(EngineLoopTest, CancelAndStopEndRequestsAsCancelled) {
  Engine engine(*model_, {.n_blocks = 64, .block_size = 4});
  Collector a, b;
  {
    EngineLoop loop(engine);
    const int64_t id_a = loop.submit(greedy(ids(9, 40), 1000), a.callback()).get();
    loop.submit(greedy(ids(9, 41), 1000), b.callback()).get();
    loop.cancel(id_a);
    EXPECT_EQ(a.wait().second, FinishReason::kCancelled);
    loop.stop();  // b is still running: stop() cancels it
    EXPECT_THROW(loop.submit(greedy({1}, 1), nullptr).get(), InvalidRequest);
  }
  EXPECT_EQ(b.wait().second, FinishReason::kCancelled);
  EXPECT_FALSE(engine.has_work());
  EXPECT_EQ(engine.block_pool().n_in_use(), 0);
}

// A request with n choices reaches its callback until every choice has finished (is_last once, at the end).
TEST_F(EngineLoopTest, EveryChoiceOfARequestReachesItsCallback) {
  GenerateRequest r = greedy(ids(9, 60), 5);
  r.n = 3;
  r.max_tokens = 5;
  r.stop_ids = {};
  const std::vector<int32_t> want = generate(*model_, greedy(r.prompt, 5), 2, nullptr).ids;
  Engine engine(*model_, {.n_blocks = 64, .block_size = 4});
  std::mutex mutex;
  std::condition_variable cv;
  std::map<int32_t, std::vector<int32_t>> got;
  int n_finished = 0, n_last = 0, n_after_last = 0;
  {
    EngineLoop loop(engine);
    loop.submit(r, [&](const RequestOutput& o) {
          std::lock_guard lock(mutex);
          n_after_last += n_last;
          if (o.token) got[o.choice].push_back(*o.token);
          n_finished += o.finish ? 1 : 0;
          n_last += o.is_last ? 1 : 0;
          cv.notify_all();
        }).get();
    std::unique_lock lock(mutex);
    cv.wait(lock, [&] { return n_last > 0; });
  }
  EXPECT_EQ(n_finished, 3);
  EXPECT_EQ(n_last, 1);
  EXPECT_EQ(n_after_last, 0);
  for (int32_t c = 0; c < 3; ++c) EXPECT_EQ(got[c], want) << "choice " << c;  // greedy: every choice alike
}

}  // namespace
}  // namespace quatre::engine
