// StepGraphs: record on the second sighting of a key, replay after. Depends on core and the CUDA runtime.
#include "backend/cuda/step_graphs.h"

#include <cstring>

#include "backend/cuda/cuda_check.h"
#include "core/check.h"

namespace quatre::cuda {
namespace {

// An upload from memory outside the step's inputs: its contents could differ at a replay, so the key is run eagerly.
struct NotRecordable {};

constexpr size_t kAlign = 256;
size_t padded(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

}  // namespace

StepGraphs::Graph::~Graph() {
  (void)cudaFree(device);  // first: it waits for the device, so no launch of the graph is still running
  (void)cudaFreeHost(pinned);
  if (exec != nullptr) (void)cudaGraphExecDestroy(exec);
  if (copied != nullptr) (void)cudaEventDestroy(copied);
}

StepGraphs::~StepGraphs() = default;

void StepGraphs::clear() {
  graphs_.clear();
  seen_.clear();
}

Tensor StepGraphs::run(const StepRecord& step, Arena& a, cudaStream_t stream, StepFn run) {
  CHECK(capturing_ == nullptr) << "run_step inside a step";
  const Arena::Mark start = a.mark();
  Key& key = key_;  // reused: no allocation a step
  key.assign(step.key.begin(), step.key.end());
  key.insert(key.end(), {static_cast<int64_t>(a.layout_id()), static_cast<int64_t>(start.chunk),
                         static_cast<int64_t>(start.offset)});
  for (const auto& in : step.inputs) key.push_back(static_cast<int64_t>(in.size()));
  if (auto it = graphs_.find(key); it != graphs_.end()) {
    replay(*it->second, step, a, stream);
    return it->second->result;
  }
  constexpr size_t kMaxSeen = 4096;  // keys seen once are forgotten past this (a long run of distinct shapes)
  if (seen_.size() >= kMaxSeen && !seen_.contains(key)) seen_.clear();
  int& sightings = seen_[key];
  if (sightings < 0 || ++sightings < 2) return run();  // refused before, or first seen: eagerly
  return record(key, step, a, stream, run);
}

// Captures run()'s launches (its uploads redirected into the graph's region), then replays the graph once to
// compute this step. A capture that cannot hold (an upload from outside the inputs, a stream sync) leaves the key
// to eager runs from now on; an error of the step itself (bad input) propagates as it would eagerly.
Tensor StepGraphs::record(const Key& key, const StepRecord& step, Arena& a, cudaStream_t stream,
                          StepFn run) {
  auto g = std::make_unique<Graph>();
  g->capacity = kAlign;
  for (const auto& in : step.inputs) g->capacity += 2 * padded(in.size());
  CUDA_CHECK(cudaMallocHost(&g->pinned, g->capacity));
  CUDA_CHECK(cudaMalloc(&g->device, g->capacity));
  CUDA_CHECK(cudaEventCreateWithFlags(&g->copied, cudaEventDisableTiming));
  const Arena::Mark start = a.mark();
  CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
  capturing_ = g.get();
  capture_step_ = &step;
  bool abandoned = false;
  try {
    g->result = run();
  } catch (const NotRecordable&) {
    capturing_ = nullptr;
    end_capture(stream, nullptr);
    abandoned = true;
  } catch (...) {
    capturing_ = nullptr;
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    (void)cudaStreamIsCapturing(stream, &status);
    end_capture(stream, nullptr);
    if (status != cudaStreamCaptureStatusInvalidated) throw;  // the step's own error
    abandoned = true;  // a call that capture forbids (a sync): the step itself is fine eagerly
  }
  if (!abandoned) {
    capturing_ = nullptr;
    abandoned = !end_capture(stream, &g->exec);
  }
  if (abandoned) {
    seen_[key] = -1;
    ++stats_.refused;
    a.rewind(start);
    return run();
  }
  g->end = a.mark();
  ++stats_.recorded;
  replay(*g, step, a, stream);
  const Tensor result = g->result;
  evict_to(max_graphs_ - 1);
  graphs_[key] = std::move(g);
  seen_.erase(key);
  return result;
}

// Ends the stream's capture; instantiates the graph into *exec when given. False when there is no graph.
bool StepGraphs::end_capture(cudaStream_t stream, cudaGraphExec_t* exec) {
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  bool ok = ended == cudaSuccess && graph != nullptr;
  if (ok && exec != nullptr) ok = cudaGraphInstantiate(exec, graph, 0) == cudaSuccess;
  if (graph != nullptr) (void)cudaGraphDestroy(graph);
  (void)cudaGetLastError();  // a failed capture's error is answered by running eagerly
  return ok;
}

// The inputs into the pinned region (after the previous replay's copy out of it has run), one copy up, the graph.
void StepGraphs::replay(Graph& g, const StepRecord& step, Arena& a, cudaStream_t stream) {
  CUDA_CHECK(cudaEventSynchronize(g.copied));
  for (const Upload& u : g.uploads) {
    std::memcpy(static_cast<std::byte*>(g.pinned) + u.at, step.inputs[u.input].data() + u.offset, u.bytes);
  }
  if (g.used > 0) CUDA_CHECK(cudaMemcpyAsync(g.device, g.pinned, g.used, cudaMemcpyHostToDevice, stream));
  CUDA_CHECK(cudaEventRecord(g.copied, stream));
  CUDA_CHECK(cudaGraphLaunch(g.exec, stream));
  a.seek(g.end);
  g.last_use = ++clock_;
  ++stats_.replayed;
}

const void* StepGraphs::upload(const void* host, size_t bytes) {
  Graph& g = *capturing_;
  auto* device = static_cast<std::byte*>(g.device);
  if (bytes == 0) return device;
  const auto p = reinterpret_cast<uintptr_t>(host);
  for (size_t i = 0; i < capture_step_->inputs.size(); ++i) {
    const auto in = capture_step_->inputs[i];
    const auto begin = reinterpret_cast<uintptr_t>(in.data());
    if (p < begin || p + bytes > begin + in.size()) continue;
    const size_t offset = p - begin;
    for (const Upload& u : g.uploads) {
      if (u.input == i && u.offset == offset && u.bytes == bytes) return device + u.at;
    }
    if (g.used + padded(bytes) > g.capacity) throw NotRecordable{};
    g.uploads.push_back({i, offset, bytes, g.used});
    g.used += padded(bytes);
    return device + g.uploads.back().at;
  }
  throw NotRecordable{};
}

void StepGraphs::evict_to(size_t n) {
  while (graphs_.size() > n) {
    auto oldest = graphs_.begin();
    for (auto it = graphs_.begin(); it != graphs_.end(); ++it) {
      if (it->second->last_use < oldest->second->last_use) oldest = it;
    }
    graphs_.erase(oldest);
  }
}

}  // namespace quatre::cuda
