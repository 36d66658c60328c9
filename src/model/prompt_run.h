// run_prompt: one sequence through TextModel::forward in a single step on a fresh cache, with explicit positions,
// the logits of chosen rows and (optionally) the hidden state after every layer copied to the host. For golden
// tests and dump tools, not the serving path (it allocates). Depends on core, io, model.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/text_model.h"

namespace quatre::model {

struct PromptRunOptions {
  std::span<const int32_t> positions = {};   // [T]; empty: 0, 1, ..., T-1
  std::span<const int32_t> logit_rows = {};  // rows whose logits to return; empty: all T
  bool capture_hidden = false;
  std::span<const int32_t> image_rows = {};        // StepInputs::image_rows / image_embeddings
  std::span<const float> image_embeddings = {};
};

struct PromptRun {
  int64_t n_tokens = 0;
  std::vector<float> logits;               // [n_rows, V]
  // [L+1][T*D]: the embedding, then the output of layer 0..L-1 (before the final norm).
  std::vector<std::vector<float>> hidden;
  // [T*D]: RMSNorm(output of the last layer). transformers' output_hidden_states puts this, not the raw output of
  // the last layer, in hidden_states[L] (it swaps in last_hidden_state); compare accordingly.
  std::vector<float> final_norm;
};

PromptRun run_prompt(const TextModel& model, std::span<const int32_t> ids, const PromptRunOptions& options = {});

}  // namespace quatre::model
