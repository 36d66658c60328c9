// Per-request token sampling on the host: penalties, logit bias, temperature, top-k, top-p, min-p, and a
// per-request seeded random stream, so a request's tokens do not depend on the batch around it. The same rules
// over a backend's summary of a row (Backend::summarize_logits: its top k and normalisers), so that only the
// summary leaves the device, with the whole row as the fallback when the summary cannot decide.
// Depends on core only.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "core/backend.h"
#include "core/rng.h"

namespace quatre::engine {

struct SamplingParams {
  float temperature = 1.0f;        // 0: greedy (argmax, lowest id on ties)
  int32_t top_k = 0;               // 0 or less: off
  float top_p = 1.0f;              // (0, 1]
  float min_p = 0.0f;              // [0, 1]: drop tokens below min_p * p(max)
  float presence_penalty = 0.0f;   // OpenAI: -= presence_penalty if the token appeared in the output
  float frequency_penalty = 0.0f;  // OpenAI: -= frequency_penalty * count in the output
  float repetition_penalty = 1.0f; // CTRL/vLLM: logits of prompt and output tokens divided (>0) or multiplied (<0)
  std::vector<std::pair<int32_t, float>> logit_bias;  // added to the logit of the id
  std::optional<uint64_t> seed;    // absent: drawn from the engine's seed source

  // Throws InvalidRequest naming the field when a value is out of range.
  void validate(int32_t vocab_size) const;
};

// The random stream of one request, seeded once. One uniform per sampled token.
using SamplerRng = Xoshiro256;

// Token history a request's penalties look at.
struct TokenHistory {
  std::span<const int32_t> prompt;
  std::span<const int32_t> output;
};

// Applies penalties and logit bias to `logits` in place (the order of vLLM: repetition, frequency and
// presence penalties, then logit bias), then picks a token: greedy at temperature 0, else temperature,
// top-k, top-p, min-p, and a draw from `rng`. `scratch` is reused across calls to avoid allocation.
struct SamplerScratch {
  std::vector<std::pair<float, int32_t>> candidates;  // (logit, id)
  std::vector<double> probs;
};
int32_t sample_token(std::span<float> logits, const SamplingParams& params, const TokenHistory& history, SamplerRng& rng,
                     SamplerScratch& scratch);

// The two halves of sample_token, for callers that act between them (the Engine masks with a TokenConstraint
// and reports logprobs there). apply_penalties: repetition, frequency, presence penalties, then logit bias.
void apply_penalties(std::span<float> logits, const SamplingParams& params, const TokenHistory& history);
// pick_token: greedy at temperature 0 (argmax, lowest id on ties), else temperature, top-k, top-p, min-p and
// one draw from rng, over the finite logits. Logits all -infinity: returns the argmax (id 0); check first.
int32_t pick_token(std::span<const float> logits, const SamplingParams& params, SamplerRng& rng, SamplerScratch& scratch);
// The same with the draw made by the caller: `u` = rng.uniform(), drawn exactly when pick_token above draws (a
// temperature above 0 and at least one finite logit), else ignored.
int32_t pick_token(std::span<const float> logits, const SamplingParams& params, double u, SamplerScratch& scratch);
// Whether pick_token draws a uniform for these logits.
bool draws_uniform(const SamplingParams& params, int32_t n_finite);

// The logit edits apply_penalties makes for `history`, as Backend::summarize_logits takes them: for row `row`,
// sorted by id, the penalties of an id in one edit, then its logit biases in order. Appended to `out`.
void penalty_edits(const SamplingParams& params, const TokenHistory& history, int32_t row, int32_t vocab_size,
                   std::vector<LogitEdit>& out);
// pick_token over a summary of the penalised row (its n_top best candidates, Σ exp((l - max)/T) over the whole
// row at params.temperature, n_finite) with the same u: the same token as pick_token over the whole row, or
// nullopt when the summary cannot tell: the draw, the top-p prefix or the min-p cut would reach past the
// candidates, top_k exceeds them (its normaliser is unknown), or a decision lies within 1e-9 of a boundary where
// the device's normaliser (summed in another order) could tip it.
std::optional<int32_t> pick_from_summary(const LogitsSummary::Row& row, const SamplingParams& params, double u);
// The log-probability of a logit of the row, as log_softmax(row).at(logit) gives it.
inline float summary_logprob(const LogitsSummary::Row& row, float logit) {
  return static_cast<float>(static_cast<double>(logit) - static_cast<double>(row.stats.max_logit) - row.stats.log_sum_exp);
}

// log-softmax of `logits` at `token` (natural log, double internally; -infinity entries have probability 0).
// Requires at least one finite logit.
struct LogSoftmax {
  double max_logit = 0;
  double log_sum = 0;  // log Σ exp(l - max_logit)
  float at(float logit) const { return static_cast<float>(static_cast<double>(logit) - max_logit - log_sum); }
};
LogSoftmax log_softmax(std::span<const float> logits);
// The k most likely ids of `logits` (largest first, lower id on ties), finite ones only.
std::vector<int32_t> top_ids(std::span<const float> logits, int32_t k);

}  // namespace quatre::engine
