// StepBuilder: per-sequence chunks -> the flat arrays of StepInputs. Validates here, so the forward need not.
// Depends on core.
#include "model/step_inputs.h"

#include <algorithm>

#include <fmt/format.h>

#include "core/error.h"

namespace quatre::model {

int64_t StepBuilder::add(const SequenceChunk& chunk, LogitRows logits) {
  const auto n = static_cast<int64_t>(chunk.ids.size());
  const int64_t n_entries = chunk.n_cached + n;
  const int64_t blocks_needed = (n_entries + block_size_ - 1) / block_size_;
  if (chunk.n_cached < 0 || static_cast<int64_t>(chunk.block_table.size()) < blocks_needed) {
    throw InvalidRequest(fmt::format("sequence chunk needs {} blocks for {} entries (block_size {}), its table has {}",
                                     blocks_needed, n_entries, block_size_, chunk.block_table.size()));
  }
  if (!chunk.positions.empty() && static_cast<int64_t>(chunk.positions.size()) != n) {
    throw InvalidRequest(fmt::format("sequence chunk has {} ids but {} positions", n, chunk.positions.size()));
  }
  const auto seq = static_cast<int32_t>(tables_.size());
  tables_.emplace_back(chunk.block_table.begin(), chunk.block_table.end());
  const int64_t first_row = n_tokens();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t entry = chunk.n_cached + i;
    const auto pos = chunk.positions.empty() ? entry : int64_t{chunk.positions[static_cast<size_t>(i)]};
    if (pos < 0 || pos > INT32_MAX) throw InvalidRequest(fmt::format("position {} out of range", pos));
    ids_.push_back(chunk.ids[static_cast<size_t>(i)]);
    positions_.push_back(static_cast<int32_t>(pos));
    seq_index_.push_back(seq);
    context_lens_.push_back(static_cast<int32_t>(entry + 1));
    slots_.push_back(int64_t{chunk.block_table[static_cast<size_t>(entry / block_size_)]} * block_size_ +
                     entry % block_size_);
    const bool wants = logits == LogitRows::kAll || (logits == LogitRows::kLast && i == n - 1);
    if (wants) logit_rows_.push_back(static_cast<int32_t>(first_row + i));
  }
  return first_row;
}

void check_step_inputs(const StepInputs& in, int64_t vocab, int64_t n_blocks, int64_t block_size) {
  const auto T = static_cast<int64_t>(in.token_ids.size());
  for (int32_t id : in.token_ids) {
    if (id < 0 || id >= vocab) throw InvalidRequest(fmt::format("step: token id {} outside the vocabulary of {}", id, vocab));
  }
  if (static_cast<int64_t>(in.attn.positions.size()) != T || static_cast<int64_t>(in.attn.slots.size()) != T) {
    throw InvalidRequest(fmt::format("step: {} positions and {} slots for {} tokens", in.attn.positions.size(),
                                     in.attn.slots.size(), T));
  }
  check_attn_meta(in.attn, T, n_blocks, block_size);
  for (int64_t slot : in.attn.slots) {
    if (slot < 0 || slot >= n_blocks * block_size) {
      throw InvalidRequest(fmt::format("step: slot {} outside a cache of {} entries", slot, n_blocks * block_size));
    }
  }
  for (int32_t row : in.logit_rows) {
    if (row < 0 || row >= T) throw InvalidRequest(fmt::format("step: logit row {} of {} tokens", row, T));
  }
}

StepInputs StepBuilder::inputs() const {
  size_t width = 1;
  for (const auto& t : tables_) width = std::max(width, t.size());
  flat_tables_.assign(tables_.size() * width, 0);
  for (size_t s = 0; s < tables_.size(); ++s) std::copy(tables_[s].begin(), tables_[s].end(), flat_tables_.begin() + s * width);
  StepInputs in;
  in.token_ids = ids_;
  in.attn = {.positions = positions_,
             .seq_index = seq_index_,
             .context_lens = context_lens_,
             .slots = slots_,
             .block_tables = flat_tables_,
             .max_blocks_per_seq = static_cast<int32_t>(width)};
  in.logit_rows = logit_rows_;
  return in;
}

}  // namespace quatre::model
