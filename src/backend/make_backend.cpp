// make_backend(): the one function that names the backend implementations. Depends on core and every backend.
#include <fmt/format.h>

#include "backend/cpu/cpu_backend.h"
#include "core/backend.h"
#include "core/error.h"
#ifdef QUATRE_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/device_info.h"
#endif

namespace quatre {

bool is_available(Device d) {
  switch (d) {
    case Device::kCpu:
      return true;
    case Device::kCuda:
#ifdef QUATRE_HAVE_CUDA
      return cuda::device_count() > 0;
#else
      return false;
#endif
  }
  return false;
}

std::unique_ptr<Backend> make_backend(Device d) {
  switch (d) {
    case Device::kCpu:
      return std::make_unique<cpu::CpuBackend>();
    case Device::kCuda:
#ifdef QUATRE_HAVE_CUDA
      return std::make_unique<cuda::CudaBackend>();  // throws LoadError without a device
#else
      break;
#endif
  }
  throw LoadError(fmt::format("no {} backend in this build (available: cpu)", device_name(d)));
}

}  // namespace quatre
