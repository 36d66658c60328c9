// OpProfiler: events recorded around each op, summed per label on report(). Depends on the CUDA runtime.
#include "backend/cuda/op_profiler.h"

#include <map>

#include "backend/cuda/cuda_check.h"

namespace quatre::cuda {

OpProfiler::~OpProfiler() {
  for (cudaEvent_t e : events_) (void)cudaEventDestroy(e);
}

void OpProfiler::enable(cudaStream_t stream, bool on) {
  stream_ = stream;
  on_ = on;
  records_.clear();
  next_event_ = 0;
}

cudaEvent_t OpProfiler::event(size_t i) {
  while (events_.size() <= i) {
    cudaEvent_t e = nullptr;
    CUDA_CHECK(cudaEventCreate(&e));
    events_.push_back(e);
  }
  return events_[i];
}

int OpProfiler::begin(std::string label, double bytes) {
  const size_t start = next_event_++;
  CUDA_CHECK(cudaEventRecord(event(start), stream_));
  records_.push_back({std::move(label), bytes, start, 0});
  return static_cast<int>(records_.size() - 1);
}

void OpProfiler::end(int record) {
  const size_t stop = next_event_++;
  CUDA_CHECK(cudaEventRecord(event(stop), stream_));
  records_[static_cast<size_t>(record)].stop = stop;
}

std::vector<ProfileRow> OpProfiler::report() {
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  std::vector<ProfileRow> rows;
  std::map<std::string, size_t> at;
  for (const Record& r : records_) {
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, events_[r.start], events_[r.stop]));
    auto [it, fresh] = at.try_emplace(r.label, rows.size());
    if (fresh) rows.push_back({.label = r.label});
    ProfileRow& row = rows[it->second];
    row.calls += 1;
    row.ms += ms;
    row.bytes += r.bytes;
  }
  records_.clear();
  next_event_ = 0;
  return rows;
}

}  // namespace quatre::cuda
