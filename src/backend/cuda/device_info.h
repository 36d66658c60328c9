// What GPUs are present, and a smoke test that a kernel built for sm_90a runs on one.
// Depends on core and the CUDA runtime.
#pragma once

#include <span>
#include <string>

namespace quatre::cuda {

// Number of usable CUDA devices; 0 when there is no driver or no GPU (never throws).
int device_count();
// "NVIDIA H200, sm_90, 132 SMs, 139.8 GiB" for device `index`.
std::string describe_device(int index);
// y = a*x + y on the device, through a kernel compiled for this build's architecture. For tests.
void axpy_on_device(float a, std::span<const float> x, std::span<float> y);

}  // namespace quatre::cuda
