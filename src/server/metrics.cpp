// Prometheus text exposition of the server's metrics.
#include "server/metrics.h"

#include <fmt/format.h>

namespace quatre::server {

void Histogram::observe(double seconds) {
  size_t i = 0;
  while (i < kBounds.size() && seconds > kBounds[i]) ++i;
  if (i < kBounds.size()) ++counts_[i];
  ++count_;
  sum_ += seconds;
}

std::string Histogram::text(const std::string& name, const std::string& help) const {
  std::string out = fmt::format("# HELP {0} {1}\n# TYPE {0} histogram\n", name, help);
  int64_t cumulative = 0;
  for (size_t i = 0; i < kBounds.size(); ++i) {
    cumulative += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, kBounds[i], cumulative);
  }
  out += fmt::format("{0}_bucket{{le=\"+Inf\"}} {1}\n{0}_sum {2}\n{0}_count {1}\n", name, count_, sum_);
  return out;
}

void Metrics::count_request(const std::string& endpoint, int status) {
  std::lock_guard lock(mutex_);
  ++requests_[{endpoint, status}];
}

void Metrics::observe_ttft(double seconds) {
  std::lock_guard lock(mutex_);
  ttft_.observe(seconds);
}

void Metrics::observe_inter_token(double seconds) {
  std::lock_guard lock(mutex_);
  inter_token_.observe(seconds);
}

void Metrics::add_tokens(int64_t n_prompt, int64_t n_generated) {
  std::lock_guard lock(mutex_);
  prompt_tokens_ += n_prompt;
  generated_tokens_ += n_generated;
}

void Metrics::sample_engine(const engine::Engine& engine) {
  const int64_t running = engine.scheduler().n_running(), waiting = engine.scheduler().n_waiting();
  const int64_t used = engine.block_pool().n_in_use(), total = engine.block_pool().n_blocks();
  const engine::EngineStats stats = engine.stats();
  std::lock_guard lock(mutex_);
  running_ = running;
  waiting_ = waiting;
  kv_blocks_used_ = used;
  kv_blocks_ = total;
  prefix_hit_rate_ = stats.prefix_hit_rate;
  preemptions_ = stats.n_preemptions;
}

std::string Metrics::text() const {
  std::lock_guard lock(mutex_);
  std::string out = "# HELP quatre_requests_total HTTP requests by endpoint and status.\n# TYPE quatre_requests_total counter\n";
  for (const auto& [key, n] : requests_) {
    out += fmt::format("quatre_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}\n", key.first, key.second, n);
  }
  out += ttft_.text("quatre_time_to_first_token_seconds", "From request admission to the first generated token.");
  out += inter_token_.text("quatre_inter_token_latency_seconds", "Between consecutive tokens of one choice.");
  auto counter = [&](const char* name, const char* help, int64_t v) {
    out += fmt::format("# HELP {0} {1}\n# TYPE {0} counter\n{0} {2}\n", name, help, v);
  };
  auto gauge = [&](const char* name, const char* help, double v) {
    out += fmt::format("# HELP {0} {1}\n# TYPE {0} gauge\n{0} {2}\n", name, help, v);
  };
  counter("quatre_prompt_tokens_total", "Prompt tokens of admitted requests (tokens/s: rate() of it).", prompt_tokens_);
  counter("quatre_generation_tokens_total", "Generated tokens (tokens/s: rate() of it).", generated_tokens_);
  counter("quatre_preemptions_total", "Sequences that gave their KV blocks back when the cache ran out (recomputed later).", preemptions_);
  gauge("quatre_requests_running", "Sequences in the engine's running batch.", static_cast<double>(running_));
  gauge("quatre_requests_waiting", "Sequences waiting for admission.", static_cast<double>(waiting_));
  gauge("quatre_kv_cache_usage_ratio", "KV cache blocks in use / all blocks.",
        kv_blocks_ > 0 ? static_cast<double>(kv_blocks_used_) / static_cast<double>(kv_blocks_) : 0.0);
  gauge("quatre_prefix_cache_hit_rate", "Prompt blocks found in the prefix cache / looked up.", prefix_hit_rate_);
  return out;
}

}  // namespace quatre::server
