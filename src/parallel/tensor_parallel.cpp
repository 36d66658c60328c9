// TensorParallelGroup: loading the ranks on their threads, and the step hand-off from rank 0 to the others.
// Depends on core, io, model, backend, parallel.
#include "parallel/tensor_parallel.h"

#include <optional>
#include <thread>

#include <fmt/format.h>

#include "core/arena.h"
#include "core/error.h"
#include "model/kv_cache.h"
#include "model/text_weights.h"
#include "parallel/gpu_ranks.h"
#include "parallel/thread_communicator.h"

namespace quatre::parallel {

struct TensorParallelGroup::Rank {
  // In dependency order: each member refers only to those above it.
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Communicator> comm;
  std::optional<model::TextWeights> weights;
  std::optional<model::TextModel> model;
  std::unique_ptr<model::KvCache> kv;  // ranks >= 1: the replica of rank 0's cache
  std::unique_ptr<Arena> arena;        // ranks >= 1
  std::thread thread;                  // ranks >= 1
  std::exception_ptr error;            // ranks >= 1: of loading, then of the current step
};

void check_tensor_parallel_supported(Device device, int size) {
  if (size < 1) throw InvalidRequest(fmt::format("tensor-parallel-size: must be at least 1, got {}", size));
  if (size > 1 && device == Device::kCuda) check_gpu_ranks(size);
}

TensorParallelGroup::TensorParallelGroup(const io::Checkpoint& checkpoint, Device device, int size,
                                         model::TextModelOptions options, model::Fp8Activations fp8)
    : text_(checkpoint.config().text) {
  check_tensor_parallel_supported(device, size);
  for (int r = 0; r < size; ++r) ranks_.push_back(std::make_unique<Rank>());
  const NcclId id = device == Device::kCuda ? nccl_unique_id() : NcclId{};
  if (device == Device::kCpu) threads_ = std::make_unique<ThreadGroup>(size);
  // Rank r's communicator, made on rank r's thread (NCCL: with GPU r current; ncclCommInitRank waits for all ranks).
  auto make_comm = [&, device, size](int r, Backend& backend) -> std::unique_ptr<Communicator> {
    if (device == Device::kCpu) return std::make_unique<ThreadCommunicator>(*threads_, r);
    return make_nccl_communicator(backend, id, r, size);
  };
  auto init = [&, device, fp8](int r) {
    Rank& rank = *ranks_[static_cast<size_t>(r)];
    if (device == Device::kCuda) use_cuda_device(r);
    rank.backend = make_backend(device);
    rank.comm = make_comm(r, *rank.backend);
    rank.weights.emplace(model::TextWeights::load(checkpoint, *rank.backend, ShardSpec{.rank = r, .size = size}, fp8));
    model::TextModelOptions o = options;
    o.comm = rank.comm.get();
    o.followers = r == 0 && size > 1 ? this : nullptr;
    rank.model.emplace(text_, *rank.weights, *rank.backend, o);
    if (r > 0) rank.arena = std::make_unique<Arena>(rank.backend->memory());
  };

  pending_ = size - 1;
  for (int r = 1; r < size; ++r) {
    ranks_[static_cast<size_t>(r)]->thread = std::thread([this, init, r] {
      Rank& rank = *ranks_[static_cast<size_t>(r)];
      try {
        init(r);
      } catch (...) {
        rank.error = std::current_exception();
      }
      {
        const std::lock_guard lock(mutex_);
        --pending_;
      }
      done_.notify_all();
      if (!rank.error) follow(r);
    });
  }
  std::exception_ptr error;
  try {
    init(0);
  } catch (...) {
    error = std::current_exception();
  }
  {
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0; });
  }
  for (auto& rank : ranks_) error = error ? error : rank->error;
  if (error) {
    abort_comms();
    {
      const std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& rank : ranks_) {
      if (rank->thread.joinable()) rank->thread.join();
    }
    std::rethrow_exception(error);
  }
}

TensorParallelGroup::~TensorParallelGroup() {
  {
    const std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& rank : ranks_) {
    if (rank->thread.joinable()) rank->thread.join();
  }
}

const model::TextModel& TensorParallelGroup::model() const { return *ranks_.front()->model; }
Backend& TensorParallelGroup::backend() const { return *ranks_.front()->backend; }
const model::TextWeights& TensorParallelGroup::weights(int rank) const { return *ranks_.at(static_cast<size_t>(rank))->weights; }

void TensorParallelGroup::begin_step(const model::StepInputs& in, const model::KvCache& kv) {
  {
    const std::lock_guard lock(mutex_);
    if (failed_) throw Error("tensor-parallel group: an earlier step failed and aborted the communicators; restart");
    in_ = &in;
    kv_blocks_ = kv.n_blocks();
    kv_block_size_ = kv.block_size();
    kv_dtype_ = kv.dtype();
    pending_ = size() - 1;
    ++step_;
  }
  wake_.notify_all();
}

void TensorParallelGroup::end_step() {
  {
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0; });
  }
  rethrow_follower_error();
}

void TensorParallelGroup::fail_step() {
  abort_all();
  {
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0; });
  }
  rethrow_follower_error();  // another rank's error is the cause when there is one
}

void TensorParallelGroup::abort_all() {
  {
    const std::lock_guard lock(mutex_);
    failed_ = true;
  }
  abort_comms();
}

void TensorParallelGroup::abort_comms() {
  for (auto& rank : ranks_) {
    if (rank->comm) rank->comm->abort();
  }
}

void TensorParallelGroup::rethrow_follower_error() {
  std::exception_ptr aborted;
  for (auto& rank : ranks_) {
    std::exception_ptr e = std::exchange(rank->error, nullptr);
    if (!e) continue;
    try {
      std::rethrow_exception(e);
    } catch (const GroupAborted&) {
      aborted = aborted ? aborted : e;
    } catch (...) {
      throw;
    }
  }
  if (aborted) std::rethrow_exception(aborted);
}

void TensorParallelGroup::follow(int r) {
  Rank& rank = *ranks_[static_cast<size_t>(r)];
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || step_ != seen; });
      if (stop_) return;
      seen = step_;
    }
    try {
      run_step(rank);
    } catch (...) {
      rank.error = std::current_exception();
      abort_all();  // rank 0 and the others leave their collectives
    }
    {
      const std::lock_guard lock(mutex_);
      --pending_;
    }
    done_.notify_all();
  }
}

void TensorParallelGroup::run_step(Rank& rank) {
  if (!rank.kv || rank.kv->n_blocks() != kv_blocks_ || rank.kv->block_size() != kv_block_size_ || rank.kv->dtype() != kv_dtype_) {
    rank.kv.reset();
    rank.kv = std::make_unique<model::KvCache>(text_, *rank.backend,
                                               model::KvCache::Options{.n_blocks = kv_blocks_, .block_size = kv_block_size_, .dtype = kv_dtype_});
  }
  rank.arena->reset();
  rank.model->forward(*in_, *rank.kv, *rank.arena);  // the logits are rank 0's to return
}

}  // namespace quatre::parallel
