// A small fixed thread pool (the CPU backend's kernels, `quatre quantize`): parallel_for splits [0, n) into one
// contiguous range per worker and blocks until all are done; the first exception a range throws is rethrown to
// the caller once every range has ended. No allocation per call. Not reentrant: a task must not call
// parallel_for on the same pool. Depends on core/check only.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace quatre {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);  // total, including the calling thread; >= 1
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int n_threads() const { return n_threads_; }

  // Calls fn(begin, end, worker) on disjoint ranges covering [0, n), worker in [0, n_threads()), using at most
  // ceil(n / min_per_worker) workers (small jobs stay on the calling thread). Rethrows the first exception of a
  // range after all ranges have run.
  template <typename F>
  void parallel_for(int64_t n, int64_t min_per_worker, F&& fn) {
    auto call = [](void* ctx, int64_t begin, int64_t end, int worker) { (*static_cast<F*>(ctx))(begin, end, worker); };
    run(n, min_per_worker, call, &fn);
  }

 private:
  using Call = void (*)(void*, int64_t, int64_t, int);
  void run(int64_t n, int64_t min_per_worker, Call call, void* ctx);
  void worker_loop(int worker);
  void run_part(int part);  // records the first exception in error_

  int n_threads_;
  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable work_ready_, work_done_;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stopping_ = false;
  // The current job.
  Call call_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0;
  int n_parts_ = 0;
  std::exception_ptr error_;  // guarded by mutex_
};

}  // namespace quatre
