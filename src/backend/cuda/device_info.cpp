// Device queries and the host side of the smoke test.
#include "backend/cuda/device_info.h"

#include <algorithm>
#include <vector>

#include <cuda_runtime_api.h>

#include <fmt/format.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/smoke_kernel.h"
#include "core/error.h"

namespace quatre::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

std::string describe_device(int index) {
  cudaDeviceProp p{};
  CUDA_CHECK(cudaGetDeviceProperties(&p, index));
  return fmt::format("{}, sm_{}{}, {} SMs, {:.1f} GiB", p.name, p.major, p.minor, p.multiProcessorCount,
                     static_cast<double>(p.totalGlobalMem) / double(1ull << 30));
}

DeviceMemory device_memory() {
  DeviceMemory m;
  CUDA_CHECK(cudaMemGetInfo(&m.free, &m.total));
  return m;
}

double measure_copy_bandwidth(size_t bytes) {
  void* a = nullptr;
  void* b = nullptr;
  CUDA_CHECK(cudaMalloc(&a, bytes));
  CUDA_CHECK(cudaMalloc(&b, bytes));
  CUDA_CHECK(cudaMemset(a, 0x3C, bytes));
  cudaEvent_t start = nullptr, stop = nullptr;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> ms;
  for (int i = 0; i < 12; ++i) {
    CUDA_CHECK(cudaEventRecord(start));
    CUDA_CHECK(cudaMemcpy(i % 2 ? a : b, i % 2 ? b : a, bytes, cudaMemcpyDeviceToDevice));
    CUDA_CHECK(cudaEventRecord(stop));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0;
    CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    if (i >= 2) ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(a);
  cudaFree(b);
  std::sort(ms.begin(), ms.end());
  return 2.0 * static_cast<double>(bytes) / (ms[ms.size() / 2] * 1e-3);
}

void axpy_on_device(float a, std::span<const float> x, std::span<float> y) {
  if (x.size() != y.size()) throw InvalidRequest(fmt::format("axpy: x has {} elements, y has {}", x.size(), y.size()));
  const size_t bytes = x.size() * sizeof(float);
  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  float* dx = nullptr;
  float* dy = nullptr;
  try {
    CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&dx), bytes, stream));
    CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&dy), bytes, stream));
    CUDA_CHECK(cudaMemcpyAsync(dx, x.data(), bytes, cudaMemcpyHostToDevice, stream));
    CUDA_CHECK(cudaMemcpyAsync(dy, y.data(), bytes, cudaMemcpyHostToDevice, stream));
    CUDA_CHECK(launch_axpy(a, dx, dy, x.size(), stream));
    CUDA_CHECK(cudaMemcpyAsync(y.data(), dy, bytes, cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaFreeAsync(dx, stream));
    CUDA_CHECK(cudaFreeAsync(dy, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
  } catch (...) {
    cudaStreamSynchronize(stream);
    cudaStreamDestroy(stream);
    throw;
  }
  CUDA_CHECK(cudaStreamDestroy(stream));
}

}  // namespace quatre::cuda
