// Host-side pieces the CudaBackend's op files share (cuda_backend.cpp, cuda_backend_moe.cpp,
// cuda_backend_sampling.cpp): weight and tensor checks with messages that name the op, conversions to the kernels'
// plain types, the backend's stream handle, launch-status checks. Depends on core and the CUDA runtime.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <cuda_runtime_api.h>

#include "backend/cuda/kernels.h"
#include "core/arena.h"
#include "core/backend.h"

namespace quatre::cuda {

// The split-K scratch launch_matmul may use for a plain problem (matmul_workspace_floats), from the step's arena; none
// when it runs in one pass.
void give_split_workspace(MatmulProblem& p, Arena& a);

// The backend's opaque stream handles as CUDA streams.
inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

// A float weight dtype as the kernels' WType; other dtypes are an InvalidRequest naming `what`.
WType wtype(DType t, std::string_view what);

// Logical columns of a weight: a 4-bit one's codes hold two a byte.
int64_t weight_cols(const Weight& w);

// "BF16", "F8_E4M3", ... or "int4" (profile labels).
std::string_view weight_type_name(const Weight& w);

// Bytes a kernel reads for the weight: a 4-bit one's codes, scales and offsets.
size_t stored_bytes(const Weight& w);

// What is wrong with a 4-bit weight for this backend ("" when nothing): codes U8 [out, in/2], scales (offsets) BF16
// [out, in/G], and G a multiple of 32 (a 16-byte load of 32 codes then lies in one group).
std::string int4_problem(const Weight& w, std::string_view what);

// A prepared (device) weight as the kernels see it; a host weight or a 4-bit layout the kernels cannot take is an
// InvalidRequest naming `what`.
DevWeight dev(const Weight& w, std::string_view what);

// One launch may carry two weights (gate and up) or a table of experts only when they share the kernel: the type,
// and for 4-bit weights the symmetry and the group size.
bool same_layout(const DevWeight& a, const DevWeight& b);

// InvalidRequest naming `what` unless t is an F32 CUDA tensor.
void check_f32(const Tensor& t, const char* what);

// The KV cache pool: F32, BF16 or FP8 E4M3 (scale 1) on the device.
WType cache_type(const Tensor& cache, const char* what);

// Output rows of a weight (1 for a vector).
int64_t weight_rows(const Weight& w);

// Throws (cuda_check) when a launch failed, naming the kernel.
void launched(cudaError_t status, const char* kernel);

}  // namespace quatre::cuda
