// make_backend(): the one function that names the backend implementations. Depends on core and every backend.
#include <fmt/format.h>

#include "backend/cpu/cpu_backend.h"
#include "core/backend.h"
#include "core/error.h"

namespace quatre {

bool is_available(Device d) { return d == Device::kCpu; }

std::unique_ptr<Backend> make_backend(Device d) {
  switch (d) {
    case Device::kCpu:
      return std::make_unique<cpu::CpuBackend>();
    case Device::kCuda:
      break;  // TODO(model): return the CUDA Backend once backend/cuda implements it, #4
  }
  throw LoadError(fmt::format("no {} backend in this build (available: cpu)", device_name(d)));
}

}  // namespace quatre
