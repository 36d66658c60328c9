// ThreadCommunicator: the N ranks of a tensor/expert-parallel group as N threads of one process on the CPU backend
// (host memory): a barrier and one published pointer per rank, every rank reading the others' buffers between two
// barriers. The reference the NCCL path is tested against (tests/parallel), and what runs `--tensor-parallel-size`
// on the CPU. run_ranks() starts the threads. Depends on core.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

#include "core/communicator.h"
#include "core/error.h"

namespace quatre::parallel {

// Thrown in a rank's collective when another rank failed (ThreadGroup::abort) instead of waiting forever.
class GroupAborted : public Error {
 public:
  using Error::Error;
};

// What the N ranks share: a reusable barrier that abort() breaks, and one published buffer per rank.
class ThreadGroup {
 public:
  explicit ThreadGroup(int size);
  int size() const { return size_; }
  // Returns when all ranks have arrived; throws GroupAborted once abort() was called.
  void arrive_and_wait();
  void abort();

  struct Published {
    const void* data = nullptr;
    int64_t numel = 0;
    DType dtype = DType::F32;
  };
  void publish(int rank, Published p) { slots_[static_cast<size_t>(rank)] = p; }
  const Published& published(int rank) const { return slots_[static_cast<size_t>(rank)]; }

 private:
  int size_;
  std::mutex mutex_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  bool aborted_ = false;
  std::vector<Published> slots_;  // written by its rank before a barrier, read by all after it
};

class ThreadCommunicator final : public Communicator {
 public:
  ThreadCommunicator(ThreadGroup& group, int rank);
  int rank() const override { return rank_; }
  int size() const override { return group_.size(); }
  void all_reduce_sum(Tensor x) override;                          // sums in rank order 0, 1, ... on every rank
  void all_gather_cols(const Tensor& local, Tensor out) override;
  Routing dispatch(const Routing& routing, ExpertShard shard, Arena& a) override;
  void barrier() override { group_.arrive_and_wait(); }
  void abort() override { group_.abort(); }

 private:
  // Publishes t and checks that every rank published the same numel and dtype (SPMD).
  void exchange(const Tensor& t, const char* op);

  ThreadGroup& group_;
  int rank_;
  std::vector<float> sum_;  // [numel] the reduction, grown to the largest tensor seen
};

// Expert dispatch of host-memory routing (ThreadCommunicator::dispatch; shared with any host-side backend):
// ids [T,K] I32, gates [T,K] F32 -> ids local to the shard, pairs of other ranks' experts -> (0, gate 0).
Routing dispatch_on_host(const Routing& routing, ExpertShard shard, Arena& a);

// Runs body(rank, comm) on `size` threads, one ThreadCommunicator each, and joins them. When a rank throws, the
// group is aborted (the others' next collective throws GroupAborted) and the first real error is rethrown here.
void run_ranks(int size, const std::function<void(int rank, Communicator& comm)>& body);

}  // namespace quatre::parallel
