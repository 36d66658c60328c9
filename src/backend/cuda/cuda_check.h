// CUDA_CHECK(call): turns a failed CUDA runtime call into a CudaError naming the call, file and line.
// Depends on core and the CUDA runtime.
#pragma once

#include <cuda_runtime_api.h>

namespace quatre::cuda {

void cuda_check(cudaError_t status, const char* call, const char* file, int line);  // throws CudaError

}  // namespace quatre::cuda

#define CUDA_CHECK(call) ::quatre::cuda::cuda_check((call), #call, __FILE__, __LINE__)
