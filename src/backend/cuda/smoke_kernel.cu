// The smoke-test kernel: proves the sm_90a build runs on the GPU.
#include "backend/cuda/smoke_kernel.h"

namespace quatre::cuda {
namespace {

__global__ void axpy_kernel(float a, const float* __restrict__ x, float* __restrict__ y, size_t n) {
  const size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (i < n) y[i] = fmaf(a, x[i], y[i]);
}

}  // namespace

cudaError_t launch_axpy(float a, const float* x, float* y, size_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((n + 255) / 256);
  axpy_kernel<<<blocks, 256, 0, stream>>>(a, x, y, n);
  return cudaGetLastError();
}

}  // namespace quatre::cuda
