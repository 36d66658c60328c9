// StepInputs: what one forward step of the text decoder reads (tokens of several sequences, their positions,
// cache entries and slots, which logit rows to produce), and StepBuilder, which fills one from per-sequence
// chunks. Depends on core.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/backend.h"

namespace quatre::model {

// All spans are host memory and outlive the forward call.
struct StepInputs {
  std::span<const int32_t> token_ids;  // [T]
  AttnMeta attn;                       // positions, sequence, context length and slot of each token; block tables
  std::span<const int32_t> logit_rows;  // rows of T whose logits forward() returns, in this order (may be empty)
  // Image features written over the embeddings of these rows (the [IMG] tokens, MODEL.md §7.6):
  // image_embeddings is [image_rows.size(), D], host memory. Empty for text.
  std::span<const int32_t> image_rows = {};
  std::span<const float> image_embeddings = {};
};

// One sequence's contribution to a step: `ids` become its cache entries n_cached, n_cached + 1, ...; each attends
// to every entry of its sequence up to and including its own (causal by entry, not by position).
struct SequenceChunk {
  std::span<const int32_t> block_table = {};  // blocks of the sequence, enough for n_cached + ids.size() entries
  int64_t n_cached = 0;                  // entries already written by earlier steps
  std::span<const int32_t> ids = {};
  // Absolute positions of `ids`; empty: n_cached, n_cached + 1, ... (goldens may start elsewhere, e.g. to
  // cross original_max_position_embeddings without a long prompt).
  std::span<const int32_t> positions = {};
};

// Throws InvalidRequest unless the step's token ids lie in [0, vocab), its attention metadata fits a cache of
// n_blocks blocks of block_size (check_attn_meta), its slots lie in that cache, and its logit rows in [0, T). What
// the ops of a forward check one by one, checked at once for a step that replays without them (Backend::run_step).
void check_step_inputs(const StepInputs& in, int64_t vocab, int64_t n_blocks, int64_t block_size);

enum class LogitRows : uint8_t { kNone, kLast, kAll };

class StepBuilder {
 public:
  explicit StepBuilder(int64_t block_size) : block_size_(block_size) {}
  // Appends the chunk's tokens; throws InvalidRequest when the block table is too short or sizes disagree.
  // Returns the row of the step where the chunk's first token is.
  int64_t add(const SequenceChunk& chunk, LogitRows logits = LogitRows::kLast);
  int64_t n_tokens() const { return static_cast<int64_t>(ids_.size()); }
  // Views of the builder's arrays: valid until the next add().
  StepInputs inputs() const;

 private:
  int64_t block_size_;
  std::vector<int32_t> ids_, positions_, seq_index_, context_lens_, logit_rows_;
  std::vector<int64_t> slots_;
  std::vector<std::vector<int32_t>> tables_;
  mutable std::vector<int32_t> flat_tables_;
};

}  // namespace quatre::model
