// What a group of GPU ranks needs from the CUDA runtime and NCCL, declared in every build: with NCCL they are
// nccl_communicator.cpp's, without it (no CUDA, or no nccl.h) no_nccl.cpp's, which refuse with a clear error. Keeps
// tensor_parallel.cpp free of #ifdefs. Depends on core.
#pragma once

#include <array>
#include <memory>
#include <string>

#include "core/backend.h"
#include "core/communicator.h"

namespace quatre::parallel {

// ncclUniqueId: made once (rank 0), handed to every rank, in process or over the network (as hex text).
struct NcclId {
  std::array<char, 128> bytes{};
};

// Throws InvalidRequest naming tensor-parallel-size when this build cannot run `size` ranks on GPUs (no NCCL, fewer
// GPUs than ranks).
void check_gpu_ranks(int size);
NcclId nccl_unique_id();                          // ncclGetUniqueId; throws CudaError
std::string nccl_id_hex(const NcclId& id);        // 256 hex digits
NcclId nccl_id_from_hex(const std::string& hex);  // throws InvalidRequest naming the text's fault
// Makes GPU `device` current for the calling thread (cudaSetDevice): before creating a rank's CudaBackend on it.
void use_cuda_device(int device);
// Rank `rank` of `size` on `backend` (a CudaBackend, its device current on this thread); blocks until every rank has
// called it with the same id (ncclCommInitRank).
std::unique_ptr<Communicator> make_nccl_communicator(Backend& backend, const NcclId& id, int rank, int size);

}  // namespace quatre::parallel
