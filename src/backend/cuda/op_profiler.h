// OpProfiler: GPU time per backend op, for `quatre bench --profile`. While enabled, each op's launches are
// bracketed by two CUDA events on the backend's stream; report() waits for the stream and sums the elapsed times
// per label (e.g. "matmul N=4096 K=4096 F8_E4M3") together with the bytes the op must move. Off by default: then a
// scope costs one branch. Depends on the CUDA runtime.
#pragma once

#include <concepts>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <cuda_runtime_api.h>

namespace quatre::cuda {

struct ProfileRow {
  std::string label;
  int64_t calls = 0;
  double ms = 0;     // GPU time between the op's first launch and the end of its last
  double bytes = 0;  // what the op must read and write (weights and activations); 0: not known to the backend
};

class OpProfiler {
 public:
  OpProfiler() = default;
  ~OpProfiler();
  OpProfiler(const OpProfiler&) = delete;
  OpProfiler& operator=(const OpProfiler&) = delete;

  void enable(cudaStream_t stream, bool on);
  bool enabled() const { return on_; }
  // Records the start of an op; end() records its stop. Returns the record's index (-1 when off).
  int begin(std::string label, double bytes);
  void end(int record);
  // Synchronises the stream; rows in order of first appearance; clears the records.
  std::vector<ProfileRow> report();

 private:
  cudaEvent_t event(size_t i);
  struct Record {
    std::string label;
    double bytes;
    size_t start, stop;  // indices into events_
  };
  bool on_ = false;
  cudaStream_t stream_ = nullptr;
  std::vector<cudaEvent_t> events_;  // grown on demand, reused across reports
  size_t next_event_ = 0;
  std::vector<Record> records_;
};

// Brackets one op while in scope.
class OpScope {
 public:
  OpScope(OpProfiler& p, const char* label, double bytes = 0) : p_(p), record_(p.enabled() ? p.begin(label, bytes) : -1) {}
  // A label made only while profiling: label() returns a std::string.
  template <std::invocable MakeLabel>
  OpScope(OpProfiler& p, MakeLabel&& label, double bytes) : p_(p), record_(p.enabled() ? p.begin(label(), bytes) : -1) {}
  ~OpScope() {
    if (record_ >= 0) p_.end(record_);
  }
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

 private:
  OpProfiler& p_;
  int record_;
};

}  // namespace quatre::cuda
