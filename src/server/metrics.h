// Metrics: the server's Prometheus counters, gauges and histograms (GET /metrics, text format 0.0.4):
// requests by endpoint and status, time to first token and inter-token latency, prompt and generated tokens,
// running/waiting requests, preemptions, KV cache usage and prefix-cache hit rate. Thread-safe. Depends on engine/engine.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "engine/engine.h"

namespace quatre::server {

class Histogram {
 public:
  static constexpr std::array<double, 12> kBounds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10};
  void observe(double seconds);
  // Prometheus lines of `name` (the _bucket, _sum and _count series).
  std::string text(const std::string& name, const std::string& help) const;

 private:
  std::array<int64_t, kBounds.size()> counts_{};  // non-cumulative: counts_[i] for (bound[i-1], bound[i]]
  int64_t count_ = 0;
  double sum_ = 0;
};

class Metrics {
 public:
  void count_request(const std::string& endpoint, int status);
  void observe_ttft(double seconds);
  void observe_inter_token(double seconds);
  void add_tokens(int64_t n_prompt, int64_t n_generated);
  // On the engine thread (an output callback): snapshots the engine's gauges.
  void sample_engine(const engine::Engine& engine);
  std::string text() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, int64_t> requests_;
  Histogram ttft_, inter_token_;
  int64_t prompt_tokens_ = 0, generated_tokens_ = 0;
  int64_t running_ = 0, waiting_ = 0, kv_blocks_used_ = 0, kv_blocks_ = 0;
  double prefix_hit_rate_ = 0;
  int64_t preemptions_ = 0;
};

}  // namespace quatre::server
