// Engine: request validation, the step (schedule -> StepBuilder -> forward -> sample -> stop), cancellation.
// Depends on core, model, engine/{block_pool,scheduler,sampling,generate}.
#include "engine/engine.h"

#include <algorithm>

#include <fmt/format.h>

#include "core/error.h"
#include "core/rng.h"
#include "model/step_inputs.h"

namespace quatre::engine {
namespace {

int64_t block_bytes(const io::TextConfig& t, int64_t block_size) {
  return t.n_layers * block_size * (t.kv_lora_rank + t.qk_rope_head_dim) * static_cast<int64_t>(sizeof(float));
}

}  // namespace

int64_t kv_blocks_for_bytes(const io::TextConfig& text, int64_t block_size, int64_t bytes) {
  return bytes / block_bytes(text, block_size);
}

Engine::Engine(const model::TextModel& model, EngineOptions options)
    : model_(model),
      options_(options),
      kv_(model.config(), model.backend(), {.n_blocks = options.n_blocks, .block_size = options.block_size, .poison = options.poison_kv}),
      pool_(options.n_blocks, options.block_size, options.enable_prefix_caching),
      scheduler_(pool_, {.max_tokens_per_step = options.max_tokens_per_step,
                         .max_running = options.max_running,
                         .max_context = std::min<int64_t>(options.max_context > 0 ? options.max_context : model.config().max_position_embeddings,
                                                          model.config().max_position_embeddings)}),
      arena_(model.backend().memory()),
      seed_state_(options.seed) {}

int64_t Engine::submit(GenerateRequest request) {
  const io::TextConfig& c = model_.config();
  const int64_t n_prompt = static_cast<int64_t>(request.prompt.size());
  if (n_prompt == 0) throw InvalidRequest("prompt: empty (at least one token is needed)");
  for (int32_t id : request.prompt) {
    if (id < 0 || id >= c.vocab_size) throw InvalidRequest(fmt::format("prompt: token id {} is outside the vocabulary of {}", id, c.vocab_size));
  }
  if (request.max_tokens < 1) throw InvalidRequest(fmt::format("max_tokens: must be at least 1, got {}", request.max_tokens));
  if (n_prompt >= max_context()) {
    throw InvalidRequest(fmt::format("prompt: {} tokens leave no room in the context of {} tokens (model {}, KV capacity {})",
                                     n_prompt, max_context(), c.max_position_embeddings, pool_.n_blocks() * pool_.block_size()));
  }
  request.sampling.validate(static_cast<int32_t>(c.vocab_size));

  const int64_t id = next_id_++;
  const uint64_t seed = request.sampling.seed.has_value() ? *request.sampling.seed : splitmix64(seed_state_);
  Request r{.params = std::move(request), .rng = SamplerRng(seed), .n_prompt = n_prompt, .max_new = 0, .output = {}};
  r.max_new = std::min<int64_t>(r.params.max_tokens, max_context() - n_prompt);
  scheduler_.add(id, r.params.prompt);
  requests_.emplace(id, std::move(r));
  return id;
}

void Engine::cancel(int64_t id) {
  if (requests_.count(id) != 0 && std::find(cancelled_.begin(), cancelled_.end(), id) == cancelled_.end()) cancelled_.push_back(id);
}

void Engine::finish(int64_t id, FinishReason reason, std::vector<RequestOutput>& outputs, std::string error) {
  scheduler_.remove(id);
  requests_.erase(id);
  if (!outputs.empty() && outputs.back().id == id) {
    outputs.back().finish = reason;
    outputs.back().error = std::move(error);
  } else {
    RequestOutput out;
    out.id = id;
    out.finish = reason;
    out.error = std::move(error);
    outputs.push_back(std::move(out));
  }
}

void Engine::sample_and_stop(int64_t id, std::span<float> logits, std::vector<RequestOutput>& outputs) {
  Request& r = requests_.at(id);
  const std::span<const int32_t> prompt(r.params.prompt);
  const int32_t token = sample_token(logits, r.params.sampling, {.prompt = prompt, .output = r.output}, r.rng, scratch_);
  r.output.push_back(token);
  RequestOutput out;
  out.id = id;
  out.token = token;
  outputs.push_back(std::move(out));
  const std::vector<int32_t>& stop_ids = r.params.stop_ids;
  if ((token == options_.eos_id && !r.params.ignore_eos) || std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) {
    finish(id, FinishReason::kStop, outputs);
  } else if (static_cast<int64_t>(r.output.size()) >= r.max_new) {
    finish(id, FinishReason::kLength, outputs);  // max_tokens, or the context is full
  } else {
    scheduler_.append_token(id, token);
  }
}

std::vector<RequestOutput> Engine::step() {
  std::vector<RequestOutput> outputs;
  for (int64_t id : cancelled_) {
    if (requests_.count(id) != 0) finish(id, FinishReason::kCancelled, outputs);
  }
  cancelled_.clear();

  const StepPlan plan = scheduler_.schedule();
  if (plan.empty()) return outputs;
  model::StepBuilder builder(pool_.block_size());
  int64_t n_rows = 0, n_decode = 0;
  for (const PlannedChunk& c : plan.chunks) {
    const Sequence& s = scheduler_.sequence(c.seq_id);
    const bool is_decode = c.n_tokens == 1 && c.is_last_known && c.n_cached >= requests_.at(c.seq_id).n_prompt;
    n_decode += is_decode ? 1 : 0;
    builder.add({.block_table = s.blocks,
                 .n_cached = c.n_cached,
                 .ids = std::span(s.tokens).subspan(static_cast<size_t>(c.n_cached), static_cast<size_t>(c.n_tokens)),
                 .positions = {}},
                c.is_last_known ? model::LogitRows::kLast : model::LogitRows::kNone);
    n_rows += c.is_last_known ? 1 : 0;
  }
  const int64_t vocab = model_.config().vocab_size;
  try {
    arena_.reset();
    const Tensor logits = model_.forward(builder.inputs(), kv_, arena_);
    logits_.resize(static_cast<size_t>(n_rows * vocab));
    if (n_rows > 0) model_.backend().copy_to_host(logits, logits_.data());
  } catch (const std::exception& e) {
    // A failed step fails the requests of its batch (their cache entries are suspect) and keeps the rest.
    for (const PlannedChunk& c : plan.chunks) finish(c.seq_id, FinishReason::kError, outputs, e.what());
    return outputs;
  }
  ++stats_.n_steps;
  stats_.n_forwarded_tokens += plan.n_tokens;
  stats_.n_decode_tokens += n_decode;
  stats_.n_mixed_steps += n_decode > 0 && n_decode < plan.n_tokens ? 1 : 0;
  scheduler_.commit(plan);

  int64_t row = 0;
  for (const PlannedChunk& c : plan.chunks) {
    if (!c.is_last_known) continue;
    sample_and_stop(c.seq_id, std::span(logits_).subspan(static_cast<size_t>(row * vocab), static_cast<size_t>(vocab)), outputs);
    ++row;
  }
  return outputs;
}

std::string Engine::capacity_line() const {
  const int64_t capacity = pool_.n_blocks() * pool_.block_size();
  const double mib = static_cast<double>(pool_.n_blocks() * block_bytes(model_.config(), pool_.block_size())) / (1024.0 * 1024.0);
  return fmt::format("kv cache: {} blocks x {} tokens = {} tokens ({:.1f} MiB); max concurrency {:.2f} at context {}",
                     pool_.n_blocks(), pool_.block_size(), capacity, mib,
                     static_cast<double>(capacity) / static_cast<double>(max_context()), max_context());
}

EngineStats Engine::stats() const {
  EngineStats s = stats_;
  s.n_preemptions = scheduler_.n_preemptions();
  s.prefix_hit_rate = pool_.hit_rate();
  return s;
}

}  // namespace quatre::engine
