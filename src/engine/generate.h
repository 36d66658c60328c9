// generate(): one request run to completion on a TextModel: the prompt prefilled in chunks, then one token
// per step, sampled on the host, until EOS, a stop id, max_tokens, the context limit or the caller stops it.
// The single-request path of `quatre run` and `quatre chat`, and the reference the batching Engine is tested against.
// Depends on core, model, engine/sampling.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "engine/sampling.h"
#include "engine/token_constraint.h"
#include "model/text_model.h"

namespace quatre::engine {

struct GenerateRequest {
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  int32_t max_tokens = 256;
  std::vector<int32_t> stop_ids;  // besides EOS
  bool ignore_eos = false;
  // Engine only (generate() runs one choice and reports no logprobs):
  int32_t n = 1;                   // independent choices sampled from one prompt prefill (output `choice` 0..n-1)
  bool logprobs = false;           // report the sampled token's log-probability
  int32_t top_logprobs = 0;        // and this many most likely alternatives (0..20)
  // Restricts sampling (JSON output, forced tool calls); cloned for each choice. Null: unconstrained.
  std::shared_ptr<const TokenConstraint> constraint;
  // Image features [n, D] spliced, in order, over the prompt's n tokens equal to image_token_id (MODEL.md §7.6),
  // in whichever prefill chunk holds them (also when recomputed after preemption or for a fork). The Engine
  // hashes each row into the prefix cache's block hashes. Empty: a text prompt.
  std::vector<float> image_embeddings;
  int32_t image_token_id = 10;
  // Engine only: engine::hash_image_rows(image_embeddings, D), computed by the caller off the engine thread (a
  // 1540-px image is 3025 rows of D = 4096). Empty: the Engine computes them in submit().
  std::vector<uint64_t> image_row_hashes;
};

// kError: the engine step that ran the request failed (the Engine reports the message with it).
enum class FinishReason { kStop, kLength, kCancelled, kError };
const char* finish_reason_name(FinishReason reason);  // "stop", "length", "cancelled", "error"

struct GenerateResult {
  std::vector<int32_t> ids;  // generated ids; the EOS or stop id that ended generation is included
  FinishReason finish = FinishReason::kStop;
  int64_t n_prompt_tokens = 0;
  double prefill_seconds = 0;  // until the first token was sampled
  double decode_seconds = 0;   // the rest
};

struct GenerateOptions {
  int64_t prefill_chunk_tokens = 512;  // prompt tokens per forward step
  int64_t block_size = 16;
  DType kv_dtype = DType::F32;  // of the request's KV cache: F32, BF16 or F8_E4M3
};

// Called with each generated id as soon as it is sampled; return false to stop (finish kCancelled).
using TokenCallback = std::function<bool(int32_t id)>;

// Throws InvalidRequest when the prompt is empty, holds an id outside the vocabulary, or leaves no room
// in the model's context (max_position_embeddings) for one new token, or for image features on a backend without
// set_rows.
GenerateResult generate(const model::TextModel& model, const GenerateRequest& request, int32_t eos_id,
                        const TokenCallback& on_token, const GenerateOptions& options = {});

}  // namespace quatre::engine
