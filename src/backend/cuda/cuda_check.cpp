// CUDA_CHECK's out-of-line part.
#include "backend/cuda/cuda_check.h"

#include <fmt/format.h>

#include "core/error.h"

namespace quatre::cuda {

void cuda_check(cudaError_t status, const char* call, const char* file, int line) {
  if (status == cudaSuccess) return;
  throw CudaError(fmt::format("{}:{}: {} failed: {} ({})", file, line, call, cudaGetErrorString(status), cudaGetErrorName(status)));
}

}  // namespace quatre::cuda
