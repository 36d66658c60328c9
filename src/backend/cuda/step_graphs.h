// StepGraphs: CUDA graphs of forward steps (Backend::run_step). The second time a step key is seen, its launches are
// captured from the stream into a graph; from then on a step of that key is one graph launch, its host inputs
// copied into the graph's own upload region first (one copy). No host code of the ops runs on a replay, so the key
// must hold everything that shapes the launches (the caller's job) and the arena's position (added here). Depends
// on core and the CUDA runtime.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include <cuda_runtime_api.h>

#include "core/backend.h"

namespace quatre::cuda {

class StepGraphs {
 public:
  struct Stats {
    int64_t recorded = 0;  // graphs captured
    int64_t replayed = 0;  // steps run as a graph launch (the recording step's own run included)
    int64_t refused = 0;   // keys whose capture failed (an upload from outside the inputs, a sync): run eagerly
  };

  explicit StepGraphs(size_t max_graphs = 64) : max_graphs_(max_graphs) {}
  ~StepGraphs();
  StepGraphs(const StepGraphs&) = delete;
  StepGraphs& operator=(const StepGraphs&) = delete;

  // Runs the step eagerly, records it, or replays its graph (on `stream`).
  Tensor run(const StepRecord& step, Arena& a, cudaStream_t stream, StepFn run);
  // While a step is being captured: the device address its ops read for an upload of `bytes` from `host`, which
  // must lie inside one of the step's inputs (else the capture is abandoned and the step runs eagerly).
  bool capturing() const { return capturing_ != nullptr; }
  const void* upload(const void* host, size_t bytes);
  Stats stats() const { return stats_; }
  void clear();

 private:
  struct Upload {
    size_t input, offset, bytes, at;  // inputs[input][offset, offset + bytes) -> region[at, at + bytes)
  };
  struct Graph {
    cudaGraphExec_t exec = nullptr;
    cudaEvent_t copied = nullptr;  // the last replay's copy out of the pinned region has run
    void* pinned = nullptr;        // host staging of the upload region
    void* device = nullptr;        // the upload region the graph's kernels read
    size_t capacity = 0, used = 0;
    std::vector<Upload> uploads;
    Tensor result;
    Arena::Mark end;  // the arena's position after the step
    uint64_t last_use = 0;
    ~Graph();
  };
  using Key = std::vector<int64_t>;

  Tensor record(const Key& key, const StepRecord& step, Arena& a, cudaStream_t stream,
                StepFn run);
  void replay(Graph& g, const StepRecord& step, Arena& a, cudaStream_t stream);
  static bool end_capture(cudaStream_t stream, cudaGraphExec_t* exec);
  void evict_to(size_t n);

  size_t max_graphs_;
  std::map<Key, std::unique_ptr<Graph>> graphs_;
  std::map<Key, int> seen_;      // keys seen once (recorded the second time) or refused (-1)
  Key key_;
  Graph* capturing_ = nullptr;
  const StepRecord* capture_step_ = nullptr;
  uint64_t clock_ = 0;
  Stats stats_;
};

}  // namespace quatre::cuda
