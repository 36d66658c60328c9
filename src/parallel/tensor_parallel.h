// TensorParallelGroup: N ranks of one model in one process, one host thread per rank (issue #10). Rank r holds its
// slice of the weights (TextWeights::load with ShardSpec{r, N}), its own backend (CPU, or CUDA on GPU r), its
// communicator (threads on the CPU, NCCL on GPUs) and its own replica of the latent cache. Rank 0's TextModel is
// what the caller drives (Engine, generate(), run_prompt): its forward starts the same step on the other ranks'
// threads and waits for them (model::StepFanout), so one engine and one scheduler serve the group with no IPC.
// Depends on core, io, model, backend, parallel's communicators.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <vector>

#include "core/backend.h"
#include "io/checkpoint.h"
#include "model/text_model.h"

namespace quatre::parallel {

class ThreadGroup;

// Whether --tensor-parallel-size N > 1 can run on `device` in this build (CUDA needs NCCL and N GPUs); throws
// InvalidRequest naming tensor-parallel-size and the reason otherwise.
void check_tensor_parallel_supported(Device device, int size);

class TensorParallelGroup final : public model::StepFanout {
 public:
  // Loads every rank: rank 0 on this thread, the others on threads of their own that then wait for steps. Throws
  // LoadError (a size that does not divide the model, see TextWeights::load) or the first rank's error.
  TensorParallelGroup(const io::Checkpoint& checkpoint, Device device, int size, model::TextModelOptions options,
                      model::Fp8Activations fp8 = model::Fp8Activations::kNone);
  ~TensorParallelGroup() override;
  TensorParallelGroup(const TensorParallelGroup&) = delete;
  TensorParallelGroup& operator=(const TensorParallelGroup&) = delete;

  int size() const { return static_cast<int>(ranks_.size()); }
  const model::TextModel& model() const;  // rank 0's
  Backend& backend() const;               // rank 0's
  const model::TextWeights& weights(int rank) const;

  void begin_step(const model::StepInputs& in, const model::KvCache& kv) override;
  void end_step() override;
  void fail_step() override;

 private:
  struct Rank;
  void init_rank(int r, const io::Checkpoint& checkpoint, Device device, model::TextModelOptions options);
  void follow(int r);        // the loop of rank r >= 1's thread
  void run_step(Rank& rank);  // rank r >= 1's part of the current step
  void abort_all();          // marks the group failed and aborts the communicators
  void abort_comms();        // breaks every rank out of its collectives
  void rethrow_follower_error();

  const io::TextConfig& text_;
  std::unique_ptr<ThreadGroup> threads_;  // CPU ranks
  std::vector<std::unique_ptr<Rank>> ranks_;

  std::mutex mutex_;
  std::condition_variable wake_, done_;
  uint64_t step_ = 0;     // incremented by begin_step
  int pending_ = 0;       // followers still running the step (or still loading)
  bool stop_ = false;
  bool failed_ = false;   // a step failed: the communicators are aborted
  const model::StepInputs* in_ = nullptr;
  int64_t kv_blocks_ = 0, kv_block_size_ = 0;
  DType kv_dtype_ = DType::F32;
};

}  // namespace quatre::parallel
