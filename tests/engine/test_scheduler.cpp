// Scheduler without a model: the token budget mixes decode and prefill chunks, admission is FCFS under the
// running limit, preemption hands blocks back and requeues at the front with generated tokens kept, and a
// seeded random workload on a tiny pool never leaks a block nor drops a sequence.
#include <algorithm>
#include <map>
#include <numeric>

#include <gtest/gtest.h>

#include "core/rng.h"
#include "engine/scheduler.h"

namespace quatre::engine {
namespace {

std::vector<int32_t> prompt_of(int n, int32_t start = 0) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), start);
  return v;
}

// What the engine does after a forward: commit, then append a token to each sequence whose chunk was its last.
void run_step(Scheduler& s, const StepPlan& plan, int32_t token = 7) {
  s.commit(plan);
  for (const PlannedChunk& c : plan.chunks) {
    if (c.is_last_known) s.append_token(c.seq_id, token);
  }
}

// A sequence that will fork waits until room for its forks is available; a fork shares the full blocks of its
// source (refcounts), copies their hashes and recomputes the partial block.
TEST(Scheduler, AdmissionLeavesRoomForForksAndAForkSharesTheFullBlocks) {
  BlockPool pool(8, 4);
  Scheduler s(pool, {.max_tokens_per_step = 64, .max_running = 8, .max_context = 32});
  s.add(1, prompt_of(16));  // 4 blocks
  run_step(s, s.schedule());
  s.add(2, prompt_of(10, 50), /*extra_blocks=*/2);  // needs 3 blocks plus 2 free: only 4 are left
  EXPECT_TRUE(s.schedule().chunks.size() == 1 && s.n_waiting() == 1);  // 1 decodes (a 5th block); 2 waits
  s.remove(1);
  const StepPlan p = s.schedule();
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.chunks[0].seq_id, 2);
  s.commit(p);
  s.fork(2, 3, 99);
  const Sequence& src = s.sequence(2);
  const Sequence& fork = s.sequence(3);
  ASSERT_EQ(fork.blocks.size(), 2u);  // the 2 full blocks of 10 tokens
  EXPECT_EQ(fork.blocks[0], src.blocks[0]);
  EXPECT_EQ(fork.blocks[1], src.blocks[1]);
  EXPECT_EQ(pool.refcount(src.blocks[0]), 2);
  EXPECT_EQ(pool.refcount(src.blocks[2]), 1);
  EXPECT_EQ(fork.block_hashes, src.block_hashes);
  EXPECT_EQ(fork.n_cached, 8);
  EXPECT_EQ(fork.tokens.size(), 11u);
  EXPECT_EQ(fork.tokens.back(), 99);
  EXPECT_TRUE(fork.is_running);
  s.append_token(2, 98);
  const StepPlan q = s.schedule();  // 2 decodes; the fork recomputes entries 8, 9 and its token
  ASSERT_EQ(q.chunks.size(), 2u);
  EXPECT_EQ(q.chunks[1].seq_id, 3);
  EXPECT_EQ(q.chunks[1].n_cached, 8);
  EXPECT_EQ(q.chunks[1].n_tokens, 3);
  EXPECT_TRUE(q.chunks[1].is_last_known);
  s.remove(2);
  s.remove(3);
  EXPECT_EQ(pool.n_in_use(), 0);
  pool.check_invariants();
}

TEST(Scheduler, ABudgetMixesDecodeTokensWithAChunkOfPrefill) {
  BlockPool pool(64, 4);
  Scheduler s(pool, {.max_tokens_per_step = 8, .max_running = 8, .max_context = 256});
  s.add(1, prompt_of(3));
  StepPlan p = s.schedule();
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.chunks[0].n_tokens, 3);
  EXPECT_TRUE(p.chunks[0].is_last_known);
  run_step(s, p);

  s.add(2, prompt_of(20, 100));
  p = s.schedule();  // 1 decode token for sequence 1, then 7 of sequence 2's prompt
  ASSERT_EQ(p.chunks.size(), 2u);
  EXPECT_EQ(p.chunks[0].seq_id, 1);
  EXPECT_EQ(p.chunks[0].n_tokens, 1);
  EXPECT_EQ(p.chunks[1].seq_id, 2);
  EXPECT_EQ(p.chunks[1].n_tokens, 7);
  EXPECT_FALSE(p.chunks[1].is_last_known);
  EXPECT_EQ(p.n_tokens, 8);
  run_step(s, p);
  p = s.schedule();
  EXPECT_EQ(p.chunks[1].n_cached, 7);
  EXPECT_EQ(p.chunks[1].n_tokens, 7);
  run_step(s, p);
  p = s.schedule();
  EXPECT_EQ(p.chunks[1].n_tokens, 6);  // the rest of the prompt
  EXPECT_TRUE(p.chunks[1].is_last_known);
  EXPECT_EQ(p.n_tokens, 7);
}

TEST(Scheduler, AdmissionIsFcfsUnderTheRunningLimit) {
  BlockPool pool(64, 4);
  Scheduler s(pool, {.max_tokens_per_step = 100, .max_running = 2, .max_context = 256});
  for (int64_t id = 1; id <= 4; ++id) s.add(id, prompt_of(5));
  StepPlan p = s.schedule();
  ASSERT_EQ(p.chunks.size(), 2u);
  EXPECT_EQ(p.chunks[0].seq_id, 1);
  EXPECT_EQ(p.chunks[1].seq_id, 2);
  EXPECT_EQ(s.n_waiting(), 2);
  run_step(s, p);
  s.remove(1);
  p = s.schedule();
  ASSERT_EQ(p.chunks.size(), 2u);
  EXPECT_EQ(p.chunks[1].seq_id, 3);  // 3 before 4
}

TEST(Scheduler, PreemptionRequeuesTheNewestAtTheFrontKeepingItsTokens) {
  BlockPool pool(4, 4);  // 16 entries
  Scheduler s(pool, {.max_tokens_per_step = 64, .max_running = 8, .max_context = 16});
  s.add(1, prompt_of(8));
  s.add(2, prompt_of(8, 50));
  StepPlan p = s.schedule();
  ASSERT_EQ(p.chunks.size(), 2u);
  run_step(s, p, 11);  // each has 9 tokens, 8 cached: both need a third block, and none is left
  EXPECT_EQ(pool.n_available(), 0);
  p = s.schedule();
  ASSERT_EQ(p.preempted, std::vector<int64_t>{2});
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.chunks[0].seq_id, 1);
  const Sequence& two = s.sequence(2);
  EXPECT_EQ(two.tokens.size(), 9u);  // the generated token is kept and will be prefilled again
  EXPECT_EQ(two.tokens.back(), 11);
  EXPECT_EQ(two.n_cached, 0);
  EXPECT_TRUE(two.blocks.empty());
  EXPECT_EQ(s.n_waiting(), 1);
  EXPECT_EQ(s.n_preemptions(), 1);
  pool.check_invariants();
  run_step(s, p);
  s.remove(1);
  // Re-admitted: its first block comes back from the prefix cache; its second, released first, was the
  // one evicted for sequence 1's third block.
  p = s.schedule();
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.chunks[0].seq_id, 2);
  EXPECT_EQ(p.chunks[0].n_cached, 4);
  EXPECT_EQ(p.chunks[0].n_tokens, 5);
  EXPECT_TRUE(p.chunks[0].is_last_known);
  pool.check_invariants();
}

TEST(Scheduler, ALoneSequenceThatFillsThePoolPreemptsNobodyButItself) {
  BlockPool pool(2, 4);
  Scheduler s(pool, {.max_tokens_per_step = 64, .max_running = 8, .max_context = 100});
  EXPECT_EQ(s.options().max_context, 8);  // capped at the pool's capacity
  s.add(1, prompt_of(7));
  StepPlan p = s.schedule();
  run_step(s, p);  // 8 tokens, 7 cached: fits exactly
  p = s.schedule();
  EXPECT_TRUE(p.preempted.empty());
  ASSERT_EQ(p.chunks.size(), 1u);
}

// A random workload: sequences of random lengths arrive, get tokens, finish at random lengths or get removed
// (cancelled) at random; a tiny pool forces preemption. After every step the pool's invariants hold and the
// blocks in use are exactly those of running sequences; at the end nothing is in use and every sequence ended.
TEST(Scheduler, RandomWorkloadOnATinyPoolNeverLeaksNorDrops) {
  int64_t n_preemptions = 0;
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    Xoshiro256 rng(seed);
    BlockPool pool(10, 4);
    Scheduler s(pool, {.max_tokens_per_step = 1 + static_cast<int64_t>(rng.next() % 12), .max_running = 4, .max_context = 40});
    std::map<int64_t, int64_t> target_len;  // id -> length at which it finishes
    int64_t next_id = 1, n_done = 0, n_submitted = 0;
    for (int step = 0; step < 3000 && (n_submitted < 40 || s.has_work()); ++step) {
      if (n_submitted < 40 && rng.next() % 3 == 0) {
        const int n_prompt = 1 + static_cast<int>(rng.next() % 30);
        s.add(next_id, prompt_of(n_prompt, static_cast<int32_t>(rng.next() % 3) * 100));
        target_len[next_id] = std::min<int64_t>(40, n_prompt + 1 + static_cast<int64_t>(rng.next() % 12));
        ++next_id;
        ++n_submitted;
      }
      if (!target_len.empty() && rng.next() % 25 == 0) {  // cancel one at random
        auto it = target_len.begin();
        std::advance(it, static_cast<std::ptrdiff_t>(rng.next() % target_len.size()));
        s.remove(it->first);
        target_len.erase(it);
        ++n_done;
      }
      const StepPlan p = s.schedule();
      int64_t n_tokens = 0;
      for (const PlannedChunk& c : p.chunks) n_tokens += c.n_tokens;
      ASSERT_LE(n_tokens, s.options().max_tokens_per_step);
      ASSERT_LE(s.n_running(), 4);
      s.commit(p);
      for (const PlannedChunk& c : p.chunks) {
        if (!c.is_last_known) continue;
        if (static_cast<int64_t>(s.sequence(c.seq_id).tokens.size()) + 1 >= target_len.at(c.seq_id)) {
          s.remove(c.seq_id);
          target_len.erase(c.seq_id);
          ++n_done;
        } else {
          s.append_token(c.seq_id, static_cast<int32_t>(rng.next() % 5));
        }
      }
      pool.check_invariants();
      std::map<int32_t, int32_t> holders;  // block -> sequences holding it
      for (const auto& [id, len] : target_len) {
        for (int32_t b : s.sequence(id).blocks) ++holders[b];
      }
      ASSERT_EQ(static_cast<int64_t>(holders.size()), pool.n_in_use()) << "seed " << seed << " step " << step;
      for (const auto& [b, n] : holders) ASSERT_EQ(pool.refcount(b), n) << "block " << b << " seed " << seed;
    }
    EXPECT_EQ(n_done, 40) << "seed " << seed;
    n_preemptions += s.n_preemptions();
    EXPECT_FALSE(s.has_work());
    EXPECT_EQ(pool.n_in_use(), 0) << "seed " << seed;
    pool.check_invariants();
  }
  EXPECT_GT(n_preemptions, 0);  // the pool is small enough that the test exercises preemption
}

}  // namespace
}  // namespace quatre::engine
