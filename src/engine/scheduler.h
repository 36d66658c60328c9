// Scheduler: continuous batching under a per-step token budget. Each step mixes the next token of every
// decoding sequence with chunks of prefill, FCFS, and preempts (recompute) the most recently admitted
// sequence when blocks run out. Owns sequence token/block state; runs on the engine thread only.
// Depends on engine/block_pool; knows nothing about the model, sampling or requests' parameters.
#pragma once

#include <cstdint>
#include <deque>
#include <span>
#include <unordered_map>
#include <vector>

#include "engine/block_pool.h"

namespace quatre::engine {

struct SchedulerOptions {
  int64_t max_tokens_per_step = 512;  // token budget of one forward step (decode tokens + prefill chunks)
  int64_t max_running = 64;           // sequences holding blocks at once
  int64_t max_context = 0;            // entries per sequence (prompt + output), <= the pool's capacity
};

// A sequence: every token known so far (prompt, then sampled ones) and the cache entries written for them.
struct Sequence {
  int64_t id = 0;
  std::vector<int32_t> tokens;
  int64_t n_cached = 0;               // entries of `tokens` written to the cache
  std::vector<int32_t> blocks;        // block table
  std::vector<BlockHash> block_hashes;  // hashes of the first block_hashes.size() (full, committed) blocks
  std::vector<TokenExtra> extras;     // what the ids do not show (image features), ascending positions
  int64_t n_preemptions = 0;
  bool is_running = false;
  int64_t extra_blocks = 0;  // left available at admission
};

// One sequence's share of a step: tokens [n_cached, n_cached + n_tokens) of it.
struct PlannedChunk {
  int64_t seq_id = 0;
  int64_t n_cached = 0;
  int64_t n_tokens = 0;
  bool is_last_known = false;  // the chunk ends at the last known token: its logits give the next token
};

struct StepPlan {
  std::vector<PlannedChunk> chunks;
  int64_t n_tokens = 0;
  std::vector<int64_t> preempted;  // sequences that gave their blocks back this step
  bool empty() const { return chunks.empty(); }
};

class Scheduler {
 public:
  Scheduler(BlockPool& pool, SchedulerOptions options);

  // Queues a sequence at the back of the waiting queue. The caller has validated it (prompt non-empty and
  // shorter than max_context); CHECKs it. It is admitted only while `extra_blocks` more blocks than its first
  // chunk needs are available (room for the choices that will fork from it). `extras` (ascending positions
  // within the prompt) go into the block hashes with the ids.
  void add(int64_t id, std::vector<int32_t> prompt, int64_t extra_blocks = 0, std::vector<TokenExtra> extras = {});
  // A new sequence `id` that continues sequence `src` (all of its tokens cached) with `token`: it shares src's
  // full, committed blocks by reference count and recomputes the entries of src's partial last block, then the
  // token. It keeps src's extras. Joins the running batch when max_running allows, else the front of the waiting queue (no blocks).
  void fork(int64_t src, int64_t id, int32_t token);
  // Frees the sequence's blocks and forgets it, whether running or waiting. Unknown ids are ignored.
  void remove(int64_t id);
  // Plans the next step and reserves the blocks its tokens need.
  StepPlan schedule();
  // After the forward of `plan` ran: advances n_cached and registers the blocks that became full.
  void commit(const StepPlan& plan);
  // Appends a sampled token to a sequence whose known tokens are all cached.
  void append_token(int64_t id, int32_t token);

  const Sequence& sequence(int64_t id) const;
  bool contains(int64_t id) const { return seqs_.count(id) != 0; }
  bool has_work() const { return !running_.empty() || !waiting_.empty(); }
  int64_t n_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t n_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t n_preemptions() const { return n_preemptions_; }
  const SchedulerOptions& options() const { return options_; }

 private:
  int64_t blocks_for(int64_t n_entries) const { return (n_entries + pool_.block_size() - 1) / pool_.block_size(); }
  // Grows seq's block table to hold n_entries; false (and nothing taken) when the pool is short.
  bool reserve(Sequence& seq, int64_t n_entries);
  void preempt(Sequence& seq);
  void release_blocks(Sequence& seq);

  BlockPool& pool_;
  SchedulerOptions options_;
  std::unordered_map<int64_t, Sequence> seqs_;
  std::vector<int64_t> running_;  // in admission order: preemption takes from the back
  std::deque<int64_t> waiting_;   // FCFS; preempted sequences return to the front
  int64_t n_preemptions_ = 0;
};

}  // namespace quatre::engine
