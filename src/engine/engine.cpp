// Engine: request validation, the step (schedule -> StepBuilder -> forward -> sample -> stop), cancellation.
// Depends on core, model, engine/{block_pool,scheduler,sampling,generate}.
#include "engine/engine.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "core/error.h"
#include "core/rng.h"
#include "model/step_inputs.h"

namespace quatre::engine {
int64_t kv_blocks_for_bytes(const io::TextConfig& text, int64_t block_size, int64_t bytes, DType dtype) {
  return bytes / model::kv_block_bytes(text, block_size, dtype);
}

int64_t kv_blocks_for_gib(const io::TextConfig& text, int64_t block_size, double gib, DType dtype) {
  if (!std::isfinite(gib) || gib <= 0 || gib > 1e6) throw InvalidRequest(fmt::format("kv-memory: must be a positive number of GiB, got {}", gib));
  const int64_t n = kv_blocks_for_bytes(text, block_size, static_cast<int64_t>(gib * 1073741824.0), dtype);
  if (n < 1) {
    throw InvalidRequest(fmt::format("kv-memory: {} GiB holds no KV block of {} bytes ({} tokens, {})", gib,
                                     model::kv_block_bytes(text, block_size, dtype), block_size, model::kv_dtype_name(dtype)));
  }
  return n;
}

namespace {

// A hash of a row of image features (their bit patterns): four independent multiply-xorshift lanes over pairs of
// values (a serial SplitMix64 chain took 350 ms for a 1540-px image), then SplitMix64 over the lanes.
uint64_t hash_row(std::span<const float> row) {
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ull;
  uint64_t lane[4] = {0x1A6E5EED00000001ull, 0x1A6E5EED00000002ull, 0x1A6E5EED00000003ull, 0x1A6E5EED00000004ull};
  const size_t n = row.size();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (size_t l = 0; l < 4; ++l) {
      const uint64_t w = std::bit_cast<uint32_t>(row[i + 2 * l]) | (static_cast<uint64_t>(std::bit_cast<uint32_t>(row[i + 2 * l + 1])) << 32);
      lane[l] = (lane[l] ^ w) * kMul;
      lane[l] ^= lane[l] >> 29;
    }
  }
  for (; i < n; ++i) {
    lane[i % 4] = (lane[i % 4] ^ std::bit_cast<uint32_t>(row[i])) * kMul;
    lane[i % 4] ^= lane[i % 4] >> 29;
  }
  uint64_t state = n;
  uint64_t h = splitmix64(state);
  for (uint64_t v : lane) {
    state ^= v + h;
    h = splitmix64(state);
  }
  return h;
}

}  // namespace

std::vector<uint64_t> hash_image_rows(std::span<const float> features, int64_t width) {
  const auto D = static_cast<size_t>(width);
  std::vector<uint64_t> out;
  for (size_t k = 0; D > 0 && (k + 1) * D <= features.size(); ++k) out.push_back(hash_row(features.subspan(k * D, D)));
  return out;
}

uint64_t choice_seed(uint64_t request_seed, int32_t choice) {
  if (choice == 0) return request_seed;
  uint64_t state = request_seed ^ (0xD1B54A32D192ED03ull * static_cast<uint64_t>(choice));
  return splitmix64(state);
}

Engine::Engine(const model::TextModel& model, EngineOptions options)
    : model_(model),
      options_(options),
      kv_(model.config(), model.backend(), {.n_blocks = options.n_blocks, .block_size = options.block_size, .poison = options.poison_kv, .dtype = options.kv_dtype}),
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
  if (request.n < 1 || request.n > kMaxChoices) throw InvalidRequest(fmt::format("n: must be in [1, {}], got {}", kMaxChoices, request.n));
  if (request.top_logprobs < 0 || request.top_logprobs > 20) {
    throw InvalidRequest(fmt::format("top_logprobs: must be in [0, 20], got {}", request.top_logprobs));
  }
  if (n_prompt >= max_context()) {
    throw InvalidRequest(fmt::format("prompt: {} tokens leave no room in the context of {} tokens (model {}, KV capacity {})",
                                     n_prompt, max_context(), c.max_position_embeddings, pool_.n_blocks() * pool_.block_size()));
  }
  // n choices at once hold the prompt's full blocks (shared) and, each, its partial last block and one token.
  const int64_t bs = pool_.block_size(), n_shared = n_prompt / bs, n_own = (n_prompt - n_shared * bs + 1 + bs - 1) / bs;
  if (request.n > 1 && n_shared + request.n * n_own > pool_.n_blocks()) {
    throw InvalidRequest(fmt::format("n: {} choices of a {}-token prompt need {} KV blocks at once, the cache has {}",
                                     request.n, n_prompt, n_shared + request.n * n_own, pool_.n_blocks()));
  }
  request.sampling.validate(static_cast<int32_t>(c.vocab_size));
  std::vector<int64_t> image_positions;
  std::vector<TokenExtra> extras;
  if (!request.image_embeddings.empty()) {
    if (!model_.backend().can_set_rows()) throw InvalidRequest("image_embeddings: this backend cannot splice image features yet (use the CPU)");
    const auto D = static_cast<size_t>(c.hidden_size);
    for (int64_t i = 0; i < n_prompt; ++i) {
      if (request.prompt[static_cast<size_t>(i)] == request.image_token_id) image_positions.push_back(i);
    }
    if (image_positions.size() * D != request.image_embeddings.size()) {
      throw InvalidRequest(fmt::format("image_embeddings: {} values for {} image tokens of width {}", request.image_embeddings.size(),
                                       image_positions.size(), D));
    }
    if (request.image_row_hashes.empty()) request.image_row_hashes = hash_image_rows(request.image_embeddings, c.hidden_size);
    if (request.image_row_hashes.size() != image_positions.size()) {
      throw InvalidRequest(fmt::format("image_row_hashes: {} hashes for {} image rows", request.image_row_hashes.size(), image_positions.size()));
    }
    for (size_t k = 0; k < image_positions.size(); ++k) extras.push_back({.position = image_positions[k], .hash = request.image_row_hashes[k]});
  }

  const int64_t id = next_id_++;
  const uint64_t seed = request.sampling.seed.has_value() ? *request.sampling.seed : splitmix64(seed_state_);
  Request r;
  r.n_prompt = n_prompt;
  r.max_new = std::min<int64_t>(request.max_tokens, max_context() - n_prompt);
  r.n_unfinished = request.n;
  r.image_positions = std::move(image_positions);
  for (int32_t i = 0; i < request.n; ++i) {
    Choice& ch = r.choices.emplace_back(Choice{.rng = SamplerRng(choice_seed(seed, i)), .output = {}, .constraint = nullptr});
    if (request.constraint) ch.constraint = request.constraint->clone();
  }
  r.params = std::move(request);
  scheduler_.add(seq_of(id, 0), r.params.prompt, (r.params.n - 1) * n_own, std::move(extras));  // room for the forks at admission
  requests_.emplace(id, std::move(r));
  return id;
}

void Engine::cancel(int64_t id) {
  if (requests_.count(id) != 0 && std::find(cancelled_.begin(), cancelled_.end(), id) == cancelled_.end()) cancelled_.push_back(id);
}

void Engine::finish(int64_t id, int32_t c, FinishReason reason, std::vector<RequestOutput>& outputs, const std::string& error) {
  Request& r = requests_.at(id);
  Choice& ch = r.choices.at(static_cast<size_t>(c));
  if (ch.is_finished) return;
  ch.is_finished = true;
  --r.n_unfinished;
  scheduler_.remove(seq_of(id, c));  // choices not forked yet have no sequence: ignored
  auto it = std::find_if(outputs.rbegin(), outputs.rend(), [&](const RequestOutput& o) { return o.id == id && o.choice == c; });
  if (it == outputs.rend()) {
    RequestOutput out;
    out.id = id;
    out.choice = c;
    outputs.push_back(std::move(out));
    it = outputs.rbegin();
  }
  it->finish = reason;
  it->error = error;
  if (r.n_unfinished > 0) return;
  requests_.erase(id);
  // The request's last output in this step carries is_last (the step reports each request's choices together).
  std::find_if(outputs.rbegin(), outputs.rend(), [&](const RequestOutput& o) { return o.id == id; })->is_last = true;
}

void Engine::finish_request(int64_t id, FinishReason reason, std::vector<RequestOutput>& outputs, const std::string& error) {
  const int32_t n = requests_.at(id).params.n;
  for (int32_t c = 0; c < n && requests_.count(id) != 0; ++c) finish(id, c, reason, outputs, error);
}

std::span<const float> Engine::host_row(int64_t row) {
  const auto V = static_cast<size_t>(model_.config().vocab_size);
  if (!is_summarized_) return std::span<const float>(logits_).subspan(static_cast<size_t>(row) * V, V);
  if (fetched_row_ != row) {
    fetched_.resize(V);
    model_.backend().copy_to_host(step_logits_.rows(row, 1), fetched_.data());
    fetched_row_ = row;
  }
  return fetched_;
}

std::optional<FinishReason> Engine::sample_choice(Request& r, int32_t c, int64_t row, RequestOutput& out) {
  Choice& ch = r.choices[static_cast<size_t>(c)];
  const GenerateRequest& p = r.params;
  auto no_finite = [&] {
    throw InvalidRequest(ch.constraint ? "constraint: every token is masked out, nothing may be sampled next"
                                       : "logits: no finite value, nothing may be sampled next");
  };
  auto is_finite = [](float l) { return l > -std::numeric_limits<float>::infinity(); };
  // log-probabilities from the whole row
  auto row_logprobs = [&](std::span<const float> logits, int32_t token) {
    const LogSoftmax lsm = log_softmax(logits);
    if (p.logprobs) out.logprob = lsm.at(logits[static_cast<size_t>(token)]);
    for (int32_t t : top_ids(logits, p.top_logprobs)) out.top_logprobs.push_back({.token = t, .logprob = lsm.at(logits[static_cast<size_t>(t)])});
  };
  const bool wants_logprobs = p.logprobs || p.top_logprobs > 0;
  try {
    int32_t token = 0;
    if (!is_summarized_ || ch.constraint) {  // the whole row on the host, penalised here
      const std::span<const float> raw = host_row(row);
      row_.assign(raw.begin(), raw.end());
      apply_penalties(row_, p.sampling, {.prompt = p.prompt, .output = ch.output});
      if (ch.constraint) ch.constraint->mask(row_);
      if (std::none_of(row_.begin(), row_.end(), is_finite)) no_finite();
      token = pick_token(row_, p.sampling, ch.rng, scratch_);
      if (wants_logprobs) row_logprobs(row_, token);
    } else {  // the backend's summary of the penalised row; the whole row when it cannot decide
      const LogitsSummary::Row s = summary_.row(row);
      if (s.stats.n_finite == 0) no_finite();
      const double u = draws_uniform(p.sampling, s.stats.n_finite) ? ch.rng.uniform() : 0.0;
      const std::optional<int32_t> picked = pick_from_summary(s, p.sampling, u);
      const bool has_top = p.top_logprobs <= s.stats.n_top || s.stats.n_top == s.stats.n_finite;
      if (picked && has_top) {
        ++stats_.n_summary_samples;
        token = *picked;
        const auto rank = static_cast<size_t>(std::find(s.ids.begin(), s.ids.end(), token) - s.ids.begin());
        if (p.logprobs) out.logprob = summary_logprob(s, s.logits[rank]);
        for (size_t i = 0; i < std::min(s.ids.size(), static_cast<size_t>(p.top_logprobs)); ++i) {
          out.top_logprobs.push_back({.token = s.ids[i], .logprob = summary_logprob(s, s.logits[i])});
        }
      } else {
        ++stats_.n_summary_fallbacks;
        const std::span<const float> edited = host_row(row);
        token = pick_token(edited, p.sampling, u, scratch_);
        if (wants_logprobs) row_logprobs(edited, token);
      }
    }
    if (ch.constraint) ch.constraint->accept(token);
    out.token = token;
    ch.output.push_back(token);
  } catch (const std::exception& e) {
    out.error = e.what();
    return FinishReason::kError;
  }
  const int32_t token = *out.token;
  const std::vector<int32_t>& stop_ids = p.stop_ids;
  if ((token == options_.eos_id && !p.ignore_eos) || std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) {
    return FinishReason::kStop;
  }
  if (ch.constraint && ch.constraint->is_complete()) return FinishReason::kStop;
  if (static_cast<int64_t>(ch.output.size()) >= r.max_new) return FinishReason::kLength;  // max_tokens, or the context is full
  return std::nullopt;
}

void Engine::sample_step(int64_t seq_id, int64_t row, std::vector<RequestOutput>& outputs) {
  const int64_t id = request_of(seq_id);
  Request& r = requests_.at(id);
  // Before the fork the prompt's logits give the first token of every choice; after it, of this choice only.
  const int32_t first = r.is_forked ? choice_of(seq_id) : 0;
  const int32_t last = r.is_forked ? first + 1 : r.params.n;
  const size_t begin = outputs.size();
  std::vector<std::optional<FinishReason>> finishes;
  for (int32_t c = first; c < last; ++c) {
    RequestOutput out;
    out.id = id;
    out.choice = c;
    finishes.push_back(sample_choice(r, c, row, out));
    outputs.push_back(std::move(out));
  }
  const bool is_first = !r.is_forked;
  r.is_forked = true;
  // Forks first: they copy choice 0's sequence, which its own finish would remove.
  for (int32_t c = last - 1; c >= first; --c) {
    const RequestOutput& out = outputs[begin + static_cast<size_t>(c - first)];
    const std::optional<FinishReason>& fin = finishes[static_cast<size_t>(c - first)];
    if (fin) {
      const std::string error = out.error;
      finish(id, c, *fin, outputs, error);
    } else if (is_first && c > 0) {
      scheduler_.fork(seq_of(id, 0), seq_of(id, c), *out.token);
    } else {
      scheduler_.append_token(seq_of(id, c), *out.token);
    }
  }
}

void Engine::add_image_rows(const Request& r, const PlannedChunk& c, int64_t row0) {
  const std::vector<int64_t>& pos = r.image_positions;
  const auto D = static_cast<size_t>(model_.config().hidden_size);
  // Image tokens among the chunk's positions [n_cached, n_cached + n_tokens); generated tokens have none.
  for (auto it = std::lower_bound(pos.begin(), pos.end(), c.n_cached); it != pos.end() && *it < c.n_cached + c.n_tokens; ++it) {
    const auto k = static_cast<size_t>(it - pos.begin());
    image_rows_.push_back(static_cast<int32_t>(row0 + *it - c.n_cached));
    image_values_.insert(image_values_.end(), r.params.image_embeddings.begin() + static_cast<std::ptrdiff_t>(k * D),
                         r.params.image_embeddings.begin() + static_cast<std::ptrdiff_t>((k + 1) * D));
  }
}

std::vector<RequestOutput> Engine::step() {
  std::vector<RequestOutput> outputs;
  for (int64_t id : cancelled_) {
    if (requests_.count(id) != 0) finish_request(id, FinishReason::kCancelled, outputs);
  }
  cancelled_.clear();

  const StepPlan plan = scheduler_.schedule();
  if (plan.empty()) return outputs;
  model::StepBuilder builder(pool_.block_size());
  int64_t n_rows = 0, n_decode = 0;
  image_rows_.clear();
  image_values_.clear();
  for (const PlannedChunk& c : plan.chunks) {
    const Sequence& s = scheduler_.sequence(c.seq_id);
    const Request& r = requests_.at(request_of(c.seq_id));
    const bool is_decode = c.n_tokens == 1 && c.is_last_known && c.n_cached >= r.n_prompt;
    n_decode += is_decode ? 1 : 0;
    const int64_t row0 = builder.add({.block_table = s.blocks,
                                      .n_cached = c.n_cached,
                                      .ids = std::span(s.tokens).subspan(static_cast<size_t>(c.n_cached), static_cast<size_t>(c.n_tokens)),
                                      .positions = {}},
                                     c.is_last_known ? model::LogitRows::kLast : model::LogitRows::kNone);
    if (!r.image_positions.empty()) add_image_rows(r, c, row0);
    n_rows += c.is_last_known ? 1 : 0;
  }
  const int64_t vocab = model_.config().vocab_size;
  try {
    arena_.reset();
    model::StepInputs inputs = builder.inputs();
    inputs.image_rows = image_rows_;
    inputs.image_embeddings = image_values_;
    const Tensor logits = model_.forward(inputs, kv_, arena_);
    Backend& be = model_.backend();
    is_summarized_ = options_.sample_on_backend && be.can_summarize_logits();
    fetched_row_ = -1;
    if (!is_summarized_) {
      logits_.resize(static_cast<size_t>(n_rows * vocab));
      if (n_rows > 0) be.copy_to_host(logits, logits_.data());
    } else if (n_rows > 0) {
      // Penalties of each row go to the backend as edits; rows of constrained requests come back whole.
      edits_.clear();
      summary_args_.clear();
      for (const PlannedChunk& c : plan.chunks) {
        if (!c.is_last_known) continue;
        const Request& r = requests_.at(request_of(c.seq_id));
        const Choice& ch = r.choices[static_cast<size_t>(r.is_forked ? choice_of(c.seq_id) : 0)];
        const SamplingParams& sp = r.params.sampling;
        const auto row = static_cast<int32_t>(summary_args_.size());
        if (ch.constraint) {
          summary_args_.push_back({.k = 0, .temperature = sp.temperature});
          continue;
        }
        penalty_edits(sp, {.prompt = r.params.prompt, .output = ch.output}, row, static_cast<int32_t>(vocab), edits_);
        const int32_t k = std::max({options_.summary_k, sp.top_k, r.params.top_logprobs});
        summary_args_.push_back({.k = std::clamp(k, 1, kMaxSummaryK), .temperature = sp.temperature});
      }
      step_logits_ = logits;
      summary_ = be.summarize_logits(logits, edits_, summary_args_, arena_);
    }
  } catch (const std::exception& e) {
    // A failed step fails the sequences of its batch (their cache entries are suspect) and keeps the rest.
    for (const PlannedChunk& c : plan.chunks) {
      const int64_t id = request_of(c.seq_id);
      if (requests_.count(id) == 0) continue;
      if (requests_.at(id).is_forked) {
        finish(id, choice_of(c.seq_id), FinishReason::kError, outputs, e.what());
      } else {
        finish_request(id, FinishReason::kError, outputs, e.what());
      }
    }
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
    sample_step(c.seq_id, row, outputs);
    ++row;
  }
  return outputs;
}

std::string Engine::capacity_line() const {
  const int64_t capacity = pool_.n_blocks() * pool_.block_size();
  const double mib = static_cast<double>(pool_.n_blocks() * model::kv_block_bytes(model_.config(), pool_.block_size(), kv_.dtype())) / (1024.0 * 1024.0);
  return fmt::format("kv cache: {} blocks x {} tokens = {} tokens ({:.1f} MiB {}); max concurrency {:.2f} at context {}",
                     pool_.n_blocks(), pool_.block_size(), capacity, mib, model::kv_dtype_name(kv_.dtype()),
                     static_cast<double>(capacity) / static_cast<double>(max_context()), max_context());
}

EngineStats Engine::stats() const {
  EngineStats s = stats_;
  s.n_preemptions = scheduler_.n_preemptions();
  s.prefix_hit_rate = pool_.hit_rate();
  return s;
}

}  // namespace quatre::engine
