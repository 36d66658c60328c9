// What GPUs are present, and a smoke test that a kernel built for sm_90a runs on one.
// Depends on core and the CUDA runtime.
#pragma once

#include <cstddef>
#include <span>
#include <string>

namespace quatre::cuda {

// Number of usable CUDA devices; 0 when there is no driver or no GPU (never throws).
int device_count();
// "NVIDIA H200, sm_90, 132 SMs, 139.8 GiB" for device `index`.
std::string describe_device(int index);
// Bytes free and total on the current device.
struct DeviceMemory {
  size_t free = 0, total = 0;
};
DeviceMemory device_memory();
// Device-to-device copy bandwidth in bytes/s counting bytes read plus bytes written (median of 10 copies of
// `bytes`, after a warm-up): the memory ceiling of a roofline, measured on the spot.
double measure_copy_bandwidth(size_t bytes);
// y = a*x + y on the device, through a kernel compiled for this build's architecture. For tests.
void axpy_on_device(float a, std::span<const float> x, std::span<float> y);

}  // namespace quatre::cuda
