// CudaBackend::summarize_logits: penalties and logit bias applied on the device, each row's top candidates and
// normalisers brought back in one small copy (sampling_kernels.cu). Depends on core and the CUDA runtime.
#include "backend/cuda/cuda_backend.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <limits>
#include <vector>

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/op_args.h"
#include "core/error.h"

namespace quatre::cuda {

static_assert(sizeof(DevLogitEdit) == sizeof(LogitEdit) && offsetof(LogitEdit, add) == offsetof(DevLogitEdit, add));
static_assert(sizeof(DevRowArgs) == sizeof(RowSummaryArgs) && offsetof(RowSummaryArgs, temperature) == offsetof(DevRowArgs, temperature));
static_assert(sizeof(DevRowStats) == sizeof(RowSummaryStats) && offsetof(RowSummaryStats, max_logit) == offsetof(DevRowStats, max_logit) &&
              offsetof(RowSummaryStats, n_top) == offsetof(DevRowStats, n_top));

LogitsSummary CudaBackend::summarize_logits(Tensor logits, std::span<const LogitEdit> edits, std::span<const RowSummaryArgs> args,
                                            Arena& a) {
  check_f32(logits, "summarize_logits logits");
  const int32_t stride = check_summary_args(logits, edits, args);
  const int64_t R = logits.dim(0), V = logits.dim(1);
  const OpScope scope(profiler_, "summarize_logits");
  // Up: args [R] then edits, in one upload.
  const size_t args_bytes = upload_span(args.size_bytes());
  summary_up_.resize(args_bytes + edits.size_bytes());
  std::memcpy(summary_up_.data(), args.data(), args.size_bytes());
  if (!edits.empty()) std::memcpy(summary_up_.data() + args_bytes, edits.data(), edits.size_bytes());
  const auto* up = static_cast<const std::byte*>(upload_bytes(summary_up_.data(), summary_up_.size()));
  const auto* dev_args = reinterpret_cast<const DevRowArgs*>(up);
  const auto* dev_edits = reinterpret_cast<const DevLogitEdit*>(up + args_bytes);
  launched(launch_logit_edits(logits.data_as<float>(), V, dev_edits, static_cast<int64_t>(edits.size()), as_stream(stream_)),
           "logit_edits");
  // Down: stats [R], ids [R, stride], logits [R, stride], in one copy.
  const size_t stats_bytes = static_cast<size_t>(R) * sizeof(DevRowStats), top_bytes = static_cast<size_t>(R * stride) * 4;
  auto* down = static_cast<std::byte*>(a.allocate(stats_bytes + 2 * top_bytes, 256));
  auto* stats = reinterpret_cast<DevRowStats*>(down);
  auto* ids = reinterpret_cast<int32_t*>(down + stats_bytes);
  auto* top = reinterpret_cast<float*>(down + stats_bytes + top_bytes);
  launched(launch_summarize_rows(logits.data_as<float>(), R, V, dev_args, stride, stats, ids, top, as_stream(stream_)),
           "summarize_rows");
  summary_down_.resize(stats_bytes + 2 * top_bytes);
  CUDA_CHECK(cudaMemcpyAsync(summary_down_.data(), down, summary_down_.size(), cudaMemcpyDeviceToHost, as_stream(stream_)));
  synchronize();
  LogitsSummary s;
  s.stride = stride;
  s.rows.resize(static_cast<size_t>(R));
  s.ids.resize(static_cast<size_t>(R * stride));
  s.logits.resize(static_cast<size_t>(R * stride));
  std::memcpy(s.rows.data(), summary_down_.data(), stats_bytes);
  std::memcpy(s.ids.data(), summary_down_.data() + stats_bytes, top_bytes);
  std::memcpy(s.logits.data(), summary_down_.data() + stats_bytes + top_bytes, top_bytes);
  for (int64_t r = 0; r < R; ++r) {  // rows not summarised: as the CPU backend leaves them
    if (args[static_cast<size_t>(r)].k != 0) continue;
    s.rows[static_cast<size_t>(r)] = RowSummaryStats{};
    std::fill_n(s.ids.begin() + r * stride, stride, -1);
    std::fill_n(s.logits.begin() + r * stride, stride, -std::numeric_limits<float>::infinity());
  }
  return s;
}

}  // namespace quatre::cuda
