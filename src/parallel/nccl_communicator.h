// NcclCommunicator: the collectives of one GPU rank through NCCL (issue #10), for the CUDA backend. One rank per GPU,
// each driven by its own host thread in one process (parallel::TensorParallelGroup) or, across hosts, one process
// per host (README, "Several GPUs"). Compiled when NCCL is found; not yet run on a multi-GPU host (tools/gpu/tp_check.sh).
// No CUDA or NCCL type in this header. Depends on core and backend/cuda.
#pragma once

#include "core/backend.h"
#include "core/communicator.h"
#include "parallel/gpu_ranks.h"

namespace quatre::cuda {
class CudaBackend;
}

namespace quatre::parallel {

// Ordering with the backend's stream: each collective waits for the backend's queued work (synchronize), runs on the
// communicator's own stream and waits for it, so the backend's next op sees the result. Correct, with two host syncs
// per collective; enqueuing on the backend's stream (no sync, CUDA-graph capturable) needs a stream accessor on
// CudaBackend (README, "Several GPUs": what is left).
class NcclCommunicator final : public Communicator {
 public:
  // Call on the thread that drives `backend` (a CudaBackend), its device current. Blocks in ncclCommInitRank until
  // all `size` ranks have called it with the same id.
  NcclCommunicator(Backend& backend, const NcclId& id, int rank, int size);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce_sum(Tensor x) override;                          // ncclAllReduce, ncclSum
  void all_gather_cols(const Tensor& local, Tensor out) override;  // ncclAllGather [size][M,c], then a transpose kernel
  Routing dispatch(const Routing& routing, ExpertShard shard, Arena& a) override;  // a kernel; no transfer
  void barrier() override;                                          // an all-reduce of one value
  void abort() override;                                            // ncclCommAbort

 private:
  void before();  // waits for the backend's queued work
  void after(const char* op);  // waits for the collective

  cuda::CudaBackend* backend_;
  int rank_, size_;
  void* comm_ = nullptr;    // ncclComm_t
  void* stream_ = nullptr;  // cudaStream_t
  void* scratch_ = nullptr;  // device buffer of all_gather_cols and barrier
  size_t scratch_bytes_ = 0;
};

}  // namespace quatre::parallel
