// gpu_ranks.h in a build without NCCL: a group of GPUs is refused up front. Depends on core.
#include <fmt/format.h>

#include "core/error.h"
#include "parallel/gpu_ranks.h"

namespace quatre::parallel {
namespace {

[[noreturn]] void refuse() {
  throw InvalidRequest("tensor-parallel-size: more than one rank on cuda needs a CUDA build with NCCL (nccl.h); this "
                       "build has none");
}

}  // namespace

void check_gpu_ranks(int) { refuse(); }
NcclId nccl_unique_id() { refuse(); }
std::string nccl_id_hex(const NcclId&) { refuse(); }
NcclId nccl_id_from_hex(const std::string&) { refuse(); }
void use_cuda_device(int) { refuse(); }
std::unique_ptr<Communicator> make_nccl_communicator(Backend&, const NcclId&, int, int) { refuse(); }

}  // namespace quatre::parallel
