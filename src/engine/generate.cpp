// The single-request generation loop.
#include "engine/generate.h"

#include <algorithm>
#include <chrono>
#include <random>

#include <fmt/format.h>

#include "core/error.h"
#include "model/kv_cache.h"
#include "model/step_inputs.h"

namespace quatre::engine {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "?";
}

GenerateResult generate(const model::TextModel& model, const GenerateRequest& request, int32_t eos_id,
                        const TokenCallback& on_token, const GenerateOptions& options) {
  const io::TextConfig& c = model.config();
  const int64_t n_prompt = static_cast<int64_t>(request.prompt.size());
  if (n_prompt == 0) throw InvalidRequest("prompt: empty (at least one token is needed)");
  for (int32_t id : request.prompt) {
    if (id < 0 || id >= c.vocab_size) throw InvalidRequest(fmt::format("prompt: token id {} is outside the vocabulary of {}", id, c.vocab_size));
  }
  if (request.max_tokens < 1) throw InvalidRequest(fmt::format("max_tokens: must be at least 1, got {}", request.max_tokens));
  if (n_prompt >= c.max_position_embeddings) {
    throw InvalidRequest(fmt::format("prompt: {} tokens leave no room in the context of {} tokens", n_prompt, c.max_position_embeddings));
  }
  request.sampling.validate(static_cast<int32_t>(c.vocab_size));
  const int64_t max_new = std::min<int64_t>(request.max_tokens, c.max_position_embeddings - n_prompt);

  Backend& be = model.backend();
  const int64_t n_entries = n_prompt + max_new;
  const int64_t n_blocks = (n_entries + options.block_size - 1) / options.block_size;
  model::KvCache kv(c, be, {.n_blocks = n_blocks, .block_size = options.block_size, .dtype = options.kv_dtype});
  const std::vector<int32_t> blocks = kv.allocate(n_blocks);
  Arena arena(be.memory());
  SamplerRng rng(request.sampling.seed.value_or(std::random_device{}()));
  SamplerScratch scratch;
  std::vector<float> logits(static_cast<size_t>(c.vocab_size));

  GenerateResult result;
  result.n_prompt_tokens = n_prompt;
  const Clock::time_point start = Clock::now();
  int64_t n_cached = 0;
  std::vector<int32_t> pending = request.prompt;  // tokens to feed next, from n_cached on
  const size_t D = static_cast<size_t>(c.hidden_size);
  struct {
    std::vector<int32_t> rows;  // [IMG] rows of the current step
    size_t used = 0;            // image embedding rows spliced so far
  } image;
  if (!request.image_embeddings.empty()) {
    if (!be.can_set_rows()) throw InvalidRequest("image_embeddings: this backend cannot splice image features yet (use the CPU)");
    const auto n_img = static_cast<size_t>(std::count(request.prompt.begin(), request.prompt.end(), request.image_token_id));
    if (n_img * D != request.image_embeddings.size()) {
      throw InvalidRequest(fmt::format("image_embeddings: {} values for {} image tokens of width {}",
                                       request.image_embeddings.size(), n_img, D));
    }
  }
  while (true) {
    // Feed what is pending, at most one chunk per step; logits of the last fed token.
    const int64_t n_feed = std::min<int64_t>(static_cast<int64_t>(pending.size()), options.prefill_chunk_tokens);
    const bool is_last_chunk = n_feed == static_cast<int64_t>(pending.size());
    model::StepBuilder step(options.block_size);
    image.rows.clear();
    if (n_cached < n_prompt && !request.image_embeddings.empty()) {  // prefill: [IMG] rows of this chunk
      for (int64_t i = 0; i < n_feed; ++i) {
        if (pending[static_cast<size_t>(i)] == request.image_token_id) image.rows.push_back(static_cast<int32_t>(i));
      }
    }
    step.add({.block_table = blocks, .n_cached = n_cached, .ids = std::span(pending).first(static_cast<size_t>(n_feed)), .positions = {}},
             is_last_chunk ? model::LogitRows::kLast : model::LogitRows::kNone);
    arena.reset();
    model::StepInputs inputs = step.inputs();
    if (!image.rows.empty()) {
      inputs.image_rows = image.rows;
      inputs.image_embeddings = std::span(request.image_embeddings).subspan(image.used * D, image.rows.size() * D);
      image.used += image.rows.size();
    }
    const Tensor out = model.forward(inputs, kv, arena);
    n_cached += n_feed;
    pending.erase(pending.begin(), pending.begin() + n_feed);
    if (!is_last_chunk) continue;

    be.copy_to_host(out, logits.data());
    const int32_t id = sample_token(logits, request.sampling, {.prompt = request.prompt, .output = result.ids}, rng, scratch);
    if (result.ids.empty()) result.prefill_seconds = seconds_since(start);
    result.ids.push_back(id);
    const bool keep_going = !on_token || on_token(id);
    const bool is_stop = (id == eos_id && !request.ignore_eos) ||
                         std::find(request.stop_ids.begin(), request.stop_ids.end(), id) != request.stop_ids.end();
    if (is_stop) {
      result.finish = FinishReason::kStop;
      break;
    }
    if (!keep_going) {
      result.finish = FinishReason::kCancelled;
      break;
    }
    if (static_cast<int64_t>(result.ids.size()) >= max_new) {
      result.finish = FinishReason::kLength;
      break;
    }
    pending = {id};
  }
  result.decode_seconds = seconds_since(start) - result.prefill_seconds;
  return result;
}

}  // namespace quatre::engine
