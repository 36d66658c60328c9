// Launchers of the few kernels the NCCL communicator needs around its collectives. Depends on the CUDA runtime.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace quatre::parallel {

// ids/gates [n] of the whole routing -> out ids local to [first, first+count) (else 0) and gates (else 0).
cudaError_t launch_dispatch(const int32_t* ids, const float* gates, int64_t n, int32_t first, int32_t count,
                            int32_t* out_ids, float* out_gates, cudaStream_t stream);
// gathered [size][M][c] -> out [M][size*c].
cudaError_t launch_cols_from_ranks(const float* gathered, int64_t size, int64_t M, int64_t c, float* out,
                                   cudaStream_t stream);

}  // namespace quatre::parallel
