// ThreadCommunicator: collectives between threads through published host pointers and a breakable barrier.
// Depends on core.
#include "parallel/thread_communicator.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <thread>

#include <fmt/format.h>

namespace quatre::parallel {

ThreadGroup::ThreadGroup(int size) : size_(size), slots_(static_cast<size_t>(std::max(size, 1))) {
  if (size < 1) throw InvalidRequest(fmt::format("tensor-parallel-size: must be at least 1, got {}", size));
}

void ThreadGroup::arrive_and_wait() {
  std::unique_lock lock(mutex_);
  if (aborted_) throw GroupAborted("tensor-parallel group aborted: another rank failed");
  const uint64_t generation = generation_;
  if (++arrived_ == size_) {
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
    return;
  }
  cv_.wait(lock, [&] { return generation_ != generation || aborted_; });
  if (generation_ == generation) throw GroupAborted("tensor-parallel group aborted: another rank failed");
}

void ThreadGroup::abort() {
  const std::lock_guard lock(mutex_);
  aborted_ = true;
  cv_.notify_all();
}

ThreadCommunicator::ThreadCommunicator(ThreadGroup& group, int rank) : group_(group), rank_(rank) {
  CHECK(rank >= 0 && rank < group.size()) << "rank " << rank << " of a group of " << group.size();
}

void ThreadCommunicator::exchange(const Tensor& t, const char* op) {
  CHECK(t.device() == Device::kCpu) << op << ": the thread communicator takes host tensors, got "
                                    << device_name(t.device());
  group_.publish(rank_, {.data = t.data(), .numel = t.numel(), .dtype = t.dtype()});
  group_.arrive_and_wait();
  for (int r = 0; r < size(); ++r) {
    const ThreadGroup::Published& p = group_.published(r);
    CHECK(p.numel == t.numel() && p.dtype == t.dtype())
        << op << ": rank " << r << " passed " << p.numel << " " << dtype_name(p.dtype) << " values, rank " << rank_
        << " " << t.numel() << " " << dtype_name(t.dtype());
  }
}

void ThreadCommunicator::all_reduce_sum(Tensor x) {
  CHECK(x.dtype() == DType::F32 || x.dtype() == DType::BF16) << "all_reduce_sum: F32 or BF16, got " << dtype_name(x.dtype());
  exchange(x, "all_reduce_sum");
  const auto n = static_cast<size_t>(x.numel());
  if (sum_.size() < n) sum_.resize(n);
  std::fill_n(sum_.begin(), n, 0.0f);
  for (int r = 0; r < size(); ++r) {  // the same order on every rank: the same bits everywhere
    const void* src = group_.published(r).data;
    if (x.dtype() == DType::F32) {
      const auto* v = static_cast<const float*>(src);
      for (size_t i = 0; i < n; ++i) sum_[i] += v[i];
    } else {
      const auto* v = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) sum_[i] += bf16_to_f32(v[i]);
    }
  }
  group_.arrive_and_wait();  // every rank has read every input: now each may overwrite its own
  if (x.dtype() == DType::F32) {
    std::copy_n(sum_.begin(), n, x.data_as<float>());
  } else {
    auto* out = x.data_as<uint16_t>();
    for (size_t i = 0; i < n; ++i) out[i] = f32_to_bf16(sum_[i]);
  }
}

// local [M,c] -> out [M, size*c]
void ThreadCommunicator::all_gather_cols(const Tensor& local, Tensor out) {
  CHECK(local.rank() == 2 && local.dtype() == DType::F32) << "all_gather_cols: local must be [M,c] F32, got "
                                                          << local.shape_string() << " " << dtype_name(local.dtype());
  const int64_t M = local.dim(0), c = local.dim(1);
  CHECK_SHAPE(out, M, size() * c);
  CHECK(out.dtype() == DType::F32 && out.device() == Device::kCpu) << "all_gather_cols: out must be F32 host memory";
  exchange(local, "all_gather_cols");
  for (int r = 0; r < size(); ++r) {
    const auto* src = static_cast<const float*>(group_.published(r).data);
    for (int64_t m = 0; m < M; ++m) std::copy_n(src + m * c, c, out.data_as<float>() + m * size() * c + r * c);
  }
  group_.arrive_and_wait();  // the others are done reading this rank's `local`
}

Routing ThreadCommunicator::dispatch(const Routing& routing, ExpertShard shard, Arena& a) {
  return dispatch_on_host(routing, shard, a);
}

Routing dispatch_on_host(const Routing& routing, ExpertShard shard, Arena& a) {
  const Tensor& ids = routing.expert_ids;
  CHECK(ids.device() == Device::kCpu && ids.rank() == 2 && ids.dtype() == DType::I32)
      << "dispatch: expert ids must be [T,K] I32 in host memory, got " << ids.shape_string();
  CHECK(shard.count >= 1) << "dispatch: a shard of " << shard.count << " experts";
  const int64_t T = ids.dim(0), K = ids.dim(1);
  CHECK_SHAPE(routing.gates, T, K);
  Routing out{.expert_ids = a.tensor(DType::I32, {T, K}), .gates = a.tensor(DType::F32, {T, K})};
  for (int64_t i = 0; i < T * K; ++i) {
    const int32_t e = ids.data_as<int32_t>()[i];
    const bool mine = shard.holds(e);
    out.expert_ids.data_as<int32_t>()[i] = mine ? e - shard.first : 0;
    out.gates.data_as<float>()[i] = mine ? routing.gates.data_as<float>()[i] : 0.0f;
  }
  return out;
}

void run_ranks(int size, const std::function<void(int rank, Communicator& comm)>& body) {
  ThreadGroup group(size);
  std::vector<std::exception_ptr> errors(static_cast<size_t>(size));
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(size));
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      try {
        ThreadCommunicator comm(group, r);
        body(r, comm);
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
        group.abort();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  // The first error that is not another rank's abort is the cause.
  std::exception_ptr first_abort;
  for (const std::exception_ptr& e : errors) {
    if (!e) continue;
    try {
      std::rethrow_exception(e);
    } catch (const GroupAborted&) {
      if (!first_abort) first_abort = e;
    } catch (...) {
      throw;
    }
  }
  if (first_abort) std::rethrow_exception(first_abort);
}

}  // namespace quatre::parallel
