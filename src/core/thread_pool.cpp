// ThreadPool: workers wait for a new generation, run their part, and count down. Depends on the standard library.
#include "core/thread_pool.h"

#include <algorithm>
#include <utility>

#include "core/check.h"

namespace quatre {

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
  for (int w = 1; w < n_threads_; ++w) threads_.emplace_back([this, w] { worker_loop(w); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_ready_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void ThreadPool::run_part(int part) {
  if (part >= n_parts_) return;
  const int64_t begin = n_ * part / n_parts_, end = n_ * (part + 1) / n_parts_;
  if (begin >= end) return;
  try {
    call_(ctx_, begin, end, part);
  } catch (...) {
    std::lock_guard lock(mutex_);
    if (!error_) error_ = std::current_exception();
  }
}

void ThreadPool::run(int64_t n, int64_t min_per_worker, Call call, void* ctx) {
  if (n <= 0) return;
  const int64_t want = (n + std::max<int64_t>(min_per_worker, 1) - 1) / std::max<int64_t>(min_per_worker, 1);
  const int n_parts = static_cast<int>(std::min<int64_t>(want, n_threads_));
  if (n_parts <= 1) {
    call(ctx, 0, n, 0);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    CHECK(pending_ == 0) << "ThreadPool::parallel_for is not reentrant";
    call_ = call;
    ctx_ = ctx;
    n_ = n;
    n_parts_ = n_parts;
    pending_ = n_threads_ - 1;
    error_ = nullptr;
    ++generation_;
  }
  work_ready_.notify_all();
  run_part(0);
  std::unique_lock lock(mutex_);
  work_done_.wait(lock, [this] { return pending_ == 0; });
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void ThreadPool::worker_loop(int worker) {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      work_ready_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
    }
    run_part(worker);
    std::lock_guard lock(mutex_);
    if (--pending_ == 0) work_done_.notify_one();
  }
}

}  // namespace quatre
