// Programmatic dependent launch (sm_90): a kernel launched with launch_dependent may start while the kernel before
// it on the stream still runs, once every block of that kernel has called pdl_allow_dependents (or exited). Until it
// calls pdl_wait it may read only what no earlier kernel of the step writes (weights) and must write nothing; after
// pdl_wait every earlier kernel has finished and its writes are visible. So a matmul can copy its weights while the
// norm or attention before it still runs (the staged kernel: matmul_staged.cu).
// The rule that keeps this safe for chains: a kernel calls pdl_allow_dependents only after its own pdl_wait (a no-op
// in a kernel launched without the attribute), so a dependent never starts before the kernel two back has finished.
// QUATRE_CUDA_PDL=1 (read once) sets the attribute; without it the launches are plain (A/B timing). Depends on CUDA only.
#pragma once

#include <utility>

#include <cuda_runtime.h>

#include "backend/cuda/kernels.h"

namespace quatre::cuda {

// Waits until the kernels before this one on the stream have finished and their writes are visible.
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }

// Lets the next kernel on the stream start (if launched with launch_dependent); call after pdl_wait.
__device__ __forceinline__ void pdl_allow_dependents() { asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory"); }

// For a kernel another may be launched behind as a dependent (a norm, the attention's combine, the routing): lets
// that one start its weight copies now (after this kernel's own wait, a no-op when launched plainly).
__device__ __forceinline__ void pdl_begin() {
  pdl_wait();
  pdl_allow_dependents();
}

// kernel<<<grid, block, shared_bytes, stream>>>(args...), allowed to start early (above) when pdl_enabled() (kernels.h).
template <typename... Params, typename... Args>
cudaError_t launch_dependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                             cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = pdl_enabled() ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace quatre::cuda
