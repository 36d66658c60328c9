// Scheduler: the step planner (decode first, then FCFS admission of waiting sequences) and preemption.
// Depends on engine/block_pool and core/check.h.
#include "engine/scheduler.h"

#include <algorithm>

#include "core/check.h"

namespace quatre::engine {

Scheduler::Scheduler(BlockPool& pool, SchedulerOptions options) : pool_(pool), options_(options) {
  const int64_t capacity = pool.n_blocks() * pool.block_size();
  if (options_.max_context <= 0 || options_.max_context > capacity) options_.max_context = capacity;
  CHECK(options_.max_tokens_per_step > 0 && options_.max_running > 0)
      << "max_tokens_per_step " << options_.max_tokens_per_step << ", max_running " << options_.max_running;
}

void Scheduler::add(int64_t id, std::vector<int32_t> prompt, int64_t extra_blocks, std::vector<TokenExtra> extras) {
  CHECK(!prompt.empty() && static_cast<int64_t>(prompt.size()) < options_.max_context)
      << "prompt of " << prompt.size() << " tokens, context " << options_.max_context;
  CHECK(seqs_.count(id) == 0) << "sequence " << id << " added twice";
  CHECK(std::is_sorted(extras.begin(), extras.end(), [](const TokenExtra& a, const TokenExtra& b) { return a.position < b.position; }) &&
        (extras.empty() || (extras.front().position >= 0 && extras.back().position < static_cast<int64_t>(prompt.size()))))
      << "sequence " << id << ": extras out of order or outside the prompt";
  Sequence& s = seqs_[id];
  s.id = id;
  s.tokens = std::move(prompt);
  s.extras = std::move(extras);
  s.extra_blocks = extra_blocks;
  waiting_.push_back(id);
}

void Scheduler::fork(int64_t src, int64_t id, int32_t token) {
  CHECK(seqs_.count(id) == 0) << "sequence " << id << " added twice";
  const Sequence& from = sequence(src);
  CHECK(from.is_running && from.n_cached == static_cast<int64_t>(from.tokens.size()) &&
        static_cast<int64_t>(from.tokens.size()) < options_.max_context)
      << "fork of sequence " << src << " with " << from.n_cached << " of " << from.tokens.size() << " cached";
  Sequence s;
  s.id = id;
  s.tokens = from.tokens;
  s.tokens.push_back(token);
  s.extras = from.extras;
  if (static_cast<int64_t>(running_.size()) < options_.max_running) {
    const size_t n_full = from.block_hashes.size();
    s.blocks.assign(from.blocks.begin(), from.blocks.begin() + static_cast<std::ptrdiff_t>(n_full));
    s.block_hashes = from.block_hashes;
    s.n_cached = static_cast<int64_t>(n_full) * pool_.block_size();
    pool_.retain(s.blocks);
    s.is_running = true;
    running_.push_back(id);
  } else {
    waiting_.push_front(id);
  }
  seqs_.emplace(id, std::move(s));
}

void Scheduler::release_blocks(Sequence& seq) {
  std::reverse(seq.blocks.begin(), seq.blocks.end());  // tail first into the LRU: it is evicted first
  pool_.release(seq.blocks);
  seq.blocks.clear();
  seq.block_hashes.clear();
  seq.n_cached = 0;
}

void Scheduler::remove(int64_t id) {
  const auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  release_blocks(it->second);
  std::erase(running_, id);
  std::erase(waiting_, id);
  seqs_.erase(it);
}

const Sequence& Scheduler::sequence(int64_t id) const {
  const auto it = seqs_.find(id);
  CHECK(it != seqs_.end()) << "unknown sequence " << id;
  return it->second;
}

bool Scheduler::reserve(Sequence& seq, int64_t n_entries) {
  const int64_t n_more = blocks_for(n_entries) - static_cast<int64_t>(seq.blocks.size());
  return n_more <= 0 || pool_.allocate(n_more, seq.blocks);
}

// Recompute preemption: the blocks go back (full ones stay findable in the prefix cache), every known token,
// generated ones included, is prefilled again at re-admission.
void Scheduler::preempt(Sequence& seq) {
  release_blocks(seq);
  seq.is_running = false;
  ++seq.n_preemptions;
  ++n_preemptions_;
  std::erase(running_, seq.id);
  waiting_.push_front(seq.id);
}

StepPlan Scheduler::schedule() {
  StepPlan plan;
  int64_t budget = options_.max_tokens_per_step;
  auto add_chunk = [&](Sequence& s, int64_t n) {
    const int64_t n_known = static_cast<int64_t>(s.tokens.size());
    plan.chunks.push_back({.seq_id = s.id, .n_cached = s.n_cached, .n_tokens = n, .is_last_known = s.n_cached + n == n_known});
    plan.n_tokens += n;
    budget -= n;
  };

  // Running sequences first, in admission order: a decode token, or the next chunk of their prefill.
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    Sequence& s = seqs_.at(running_[i]);
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(s.tokens.size()) - s.n_cached, budget);
    CHECK(n > 0) << "running sequence " << s.id << " has nothing to compute";
    bool is_preempted_self = false;
    while (!reserve(s, s.n_cached + n)) {
      Sequence& victim = seqs_.at(running_.back());  // the most recently admitted
      plan.preempted.push_back(victim.id);
      is_preempted_self = victim.id == s.id;
      preempt(victim);
      if (is_preempted_self) break;
    }
    if (is_preempted_self) break;
    add_chunk(s, n);
  }

  // Then admission, FCFS: stop at the first waiting sequence that does not fit. No admission in a step that
  // preempted, so a preempted sequence is not re-admitted into the blocks it just gave back.
  while (plan.preempted.empty() && !waiting_.empty() && budget > 0 &&
         static_cast<int64_t>(running_.size()) < options_.max_running) {
    Sequence& s = seqs_.at(waiting_.front());
    const int64_t n_known = static_cast<int64_t>(s.tokens.size());
    // Reuse cached full blocks, but compute at least the last known token: its logits are needed.
    s.blocks = pool_.match_prefix(s.tokens, (n_known - 1) / pool_.block_size(), s.block_hashes, s.extras);
    const int64_t n_hit = static_cast<int64_t>(s.blocks.size());
    s.n_cached = n_hit * pool_.block_size();
    const int64_t n = std::min(n_known - s.n_cached, budget);
    if (!reserve(s, s.n_cached + n) || pool_.n_available() < s.extra_blocks) {
      release_blocks(s);
      break;
    }
    s.extra_blocks = 0;  // once admitted (a preempted fork is re-admitted like any sequence)
    pool_.record_lookup(n_hit, (n_known - 1) / pool_.block_size() - n_hit);
    waiting_.pop_front();
    running_.push_back(s.id);
    s.is_running = true;
    add_chunk(s, n);
  }
  return plan;
}

void Scheduler::commit(const StepPlan& plan) {
  const int64_t bs = pool_.block_size();
  for (const PlannedChunk& c : plan.chunks) {
    Sequence& s = seqs_.at(c.seq_id);
    CHECK(s.n_cached == c.n_cached) << "sequence " << s.id << " changed between schedule and commit";
    s.n_cached += c.n_tokens;
    for (int64_t j = static_cast<int64_t>(s.block_hashes.size()); (j + 1) * bs <= s.n_cached; ++j) {
      const BlockHash parent = j == 0 ? kRootBlockHash : s.block_hashes.back();
      const BlockHash h = hash_block(parent, std::span(s.tokens).subspan(static_cast<size_t>(j * bs), static_cast<size_t>(bs)),
                                     extras_in(s.extras, j * bs, (j + 1) * bs));
      pool_.commit_full_block(s.blocks[static_cast<size_t>(j)], h);
      s.block_hashes.push_back(h);
    }
  }
}

void Scheduler::append_token(int64_t id, int32_t token) {
  Sequence& s = seqs_.at(id);
  CHECK(s.is_running && s.n_cached == static_cast<int64_t>(s.tokens.size()))
      << "sequence " << id << ": token appended with " << s.n_cached << " of " << s.tokens.size() << " cached";
  CHECK(static_cast<int64_t>(s.tokens.size()) < options_.max_context) << "sequence " << id << " is past the context";
  s.tokens.push_back(token);
}

}  // namespace quatre::engine
