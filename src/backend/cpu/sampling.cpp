// CpuBackend::summarize_logits: the logit edits in list order, then per row (threaded over rows) the count and
// maximum of the finite logits, the double sums at the row's temperature and at 1, and the top k by a partial sort
// in pick_token's order. The oracle of the CUDA kernel (tests/backend/cuda/test_cuda_sampling.cpp). Depends on core.
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "backend/cpu/cpu_backend.h"

namespace quatre::cpu {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Row r of the summary from its edited logits [V].
void summarize_row(std::span<const float> row, const RowSummaryArgs& args, RowSummaryStats& st, int32_t* ids,
                   float* top, std::vector<std::pair<float, int32_t>>& scratch) {
  st = RowSummaryStats{};
  st.max_logit = kNegInf;
  for (float l : row) {
    if (l > kNegInf) {
      ++st.n_finite;
      st.max_logit = std::max(st.max_logit, l);
    }
  }
  if (st.n_finite == 0) return;
  const double max = st.max_logit, T = args.temperature;
  double sum_t = 0, sum_1 = 0;
  for (float l : row) {
    if (!(l > kNegInf)) continue;
    if (T > 0) sum_t += std::exp((static_cast<double>(l) - max) / T);
    if (T != 1) sum_1 += std::exp(static_cast<double>(l) - max);
  }
  st.sum_exp = sum_t;
  st.log_sum_exp = std::log(T == 1 ? sum_t : sum_1);
  st.n_top = std::min(args.k, st.n_finite);
  scratch.clear();
  for (size_t i = 0; i < row.size(); ++i) {
    if (row[i] > kNegInf) scratch.emplace_back(row[i], static_cast<int32_t>(i));
  }
  std::partial_sort(scratch.begin(), scratch.begin() + st.n_top, scratch.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  for (int32_t i = 0; i < st.n_top; ++i) {
    top[i] = scratch[static_cast<size_t>(i)].first;
    ids[i] = scratch[static_cast<size_t>(i)].second;
  }
}

}  // namespace

LogitsSummary CpuBackend::summarize_logits(Tensor logits, std::span<const LogitEdit> edits, std::span<const RowSummaryArgs> args,
                                           Arena& /*a*/) {
  CHECK(logits.device() == Device::kCpu) << "summarize_logits of a " << device_name(logits.device()) << " tensor";
  const int32_t stride = check_summary_args(logits, edits, args);
  const int64_t R = logits.dim(0), V = logits.dim(1);
  float* l = logits.data_as<float>();
  for (const LogitEdit& e : edits) {
    float& x = l[e.row * V + e.id];
    if (e.rep != 1.0f) x = x > 0 ? x / e.rep : x * e.rep;
    x += e.add;
  }
  LogitsSummary s;
  s.stride = stride;
  s.rows.resize(static_cast<size_t>(R));
  s.ids.assign(static_cast<size_t>(R * stride), -1);
  s.logits.assign(static_cast<size_t>(R * stride), kNegInf);
  std::vector<std::vector<std::pair<float, int32_t>>> scratch(static_cast<size_t>(pool_.n_threads()));
  pool_.parallel_for(R, 1, [&](int64_t begin, int64_t end, int thread) {
    for (int64_t r = begin; r < end; ++r) {
      const RowSummaryArgs& ra = args[static_cast<size_t>(r)];
      if (ra.k == 0) continue;
      summarize_row(std::span<const float>(l + r * V, static_cast<size_t>(V)), ra, s.rows[static_cast<size_t>(r)],
                    s.ids.data() + r * stride, s.logits.data() + r * stride, scratch[static_cast<size_t>(thread)]);
    }
  });
  return s;
}

}  // namespace quatre::cpu
