// Launcher of the smoke-test kernel (device code in smoke_kernel.cu). .cu files include no fmt: its
// headers do not compile under nvcc in C++20 mode, so messages are built in .cpp files.
#pragma once

#include <cstddef>

#include <cuda_runtime_api.h>

namespace quatre::cuda {

// y[i] = a * x[i] + y[i] for i < n, on `stream`; returns the launch status.
cudaError_t launch_axpy(float a, const float* x, float* y, size_t n, cudaStream_t stream);

}  // namespace quatre::cuda
