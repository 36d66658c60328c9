// quatre bench --profile's one more run op by op, shared by the text model's bench (cmd_bench.cpp) and the vision
// tower's (bench_vision.cpp). CUDA builds only. Wiring only.
#pragma once

#include <vector>

#include "backend/cuda/cuda_backend.h"

namespace quatre::cli {

// One more run of `work` (a step, a prefill, a tower run) with the backend's op profiler on: its rows.
template <typename Work>
std::vector<cuda::ProfileRow> profile_run(cuda::CudaBackend& cb, Work&& work) {
  cb.synchronize();
  cb.set_profiling(true);
  work();
  std::vector<cuda::ProfileRow> rows = cb.profile();
  cb.set_profiling(false);
  return rows;
}

}  // namespace quatre::cli
