// The kernels of parallel_kernels.h: elementwise, one thread per value. Depends on the CUDA runtime.
#include "parallel/parallel_kernels.h"

namespace quatre::parallel {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

__global__ void dispatch_kernel(const int32_t* ids, const float* gates, int64_t n, int32_t first, int32_t count,
                                int32_t* out_ids, float* out_gates) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int32_t e = ids[i];
  const bool mine = e >= first && e < first + count;
  out_ids[i] = mine ? e - first : 0;
  out_gates[i] = mine ? gates[i] : 0.0f;
}

__global__ void cols_from_ranks_kernel(const float* gathered, int64_t size, int64_t M, int64_t c, float* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // index into out [M][size*c]
  if (i >= size * M * c) return;
  const int64_t m = i / (size * c), col = i % (size * c), r = col / c, j = col % c;
  out[i] = gathered[(r * M + m) * c + j];
}

}  // namespace

cudaError_t launch_dispatch(const int32_t* ids, const float* gates, int64_t n, int32_t first, int32_t count,
                            int32_t* out_ids, float* out_gates, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  dispatch_kernel<<<blocks_for(n), kThreads, 0, stream>>>(ids, gates, n, first, count, out_ids, out_gates);
  return cudaGetLastError();
}

cudaError_t launch_cols_from_ranks(const float* gathered, int64_t size, int64_t M, int64_t c, float* out,
                                   cudaStream_t stream) {
  const int64_t n = size * M * c;
  if (n == 0) return cudaSuccess;
  cols_from_ranks_kernel<<<blocks_for(n), kThreads, 0, stream>>>(gathered, size, M, c, out);
  return cudaGetLastError();
}

}  // namespace quatre::parallel
