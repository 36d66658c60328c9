// Engine on the tiny model (CPU): a request alone (generate(), proven equal to transformers) equals the same
// request inside a busy mixed batch; chunked prefill equals whole prefill; a prefix-cache hit equals a miss and
// skips the shared blocks; seeded sampling ignores the batch; cancellation, preemption and admission errors;
// and a seeded random workload on a tiny pool that never leaks a block.
#include <algorithm>
#include <map>
#include <set>

#include <gtest/gtest.h>

#include "core/error.h"
#include "core/rng.h"
#include "engine/engine.h"
#include "engine_test_util.h"

namespace quatre::engine {
namespace {


constexpr int32_t kEos = 2;

struct Finished {
  std::vector<int32_t> ids;
  FinishReason finish = FinishReason::kStop;
};

class EngineTest : public test::TinyModelTest {
 protected:
  static std::vector<int32_t> alone(const GenerateRequest& r) { return generate(*model_, r, kEos, nullptr).ids; }

  // Submits requests[i] before step arrivals[i], steps until idle, checks the pool after every step; returns
  // the outputs by submission index. Streamed tokens must add up to the same output.
  static std::vector<Finished> run(Engine& engine, const std::vector<GenerateRequest>& requests, const std::vector<int>& arrivals) {
    std::map<int64_t, size_t> index;
    std::vector<Finished> out(requests.size());
    size_t next = 0;
    for (int step = 0; step < 10000; ++step) {
      for (; next < requests.size() && arrivals[next] <= step; ++next) index[engine.submit(requests[next])] = next;
      if (next == requests.size() && !engine.has_work()) break;
      for (const RequestOutput& o : engine.step()) {
        Finished& f = out[index.at(o.id)];
        if (o.token) f.ids.push_back(*o.token);
        if (o.finish) f.finish = *o.finish;
      }
      engine.block_pool().check_invariants();
    }
    EXPECT_FALSE(engine.has_work());
    EXPECT_EQ(engine.block_pool().n_in_use(), 0);
    return out;
  }
};

TEST_F(EngineTest, GreedyAloneEqualsGreedyInsideABusyMixedBatch) {
  const std::vector<GenerateRequest> requests = {greedy(ids(5, 1), 20),  greedy(ids(77, 2), 12), greedy(ids(13, 3), 25),
                                                 greedy(ids(150, 4), 8), greedy(ids(1, 5), 16),  greedy(ids(40, 6), 10)};
  // A small budget: prompts are prefilled in chunks next to other sequences' decode tokens.
  Engine engine(*model_, {.n_blocks = 128, .block_size = 4, .max_tokens_per_step = 16, .max_running = 8});
  const std::vector<Finished> got = run(engine, requests, {0, 0, 2, 5, 9, 9});
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(got[i].ids, alone(requests[i])) << "request " << i;
    EXPECT_EQ(got[i].finish, FinishReason::kLength);
  }
  EXPECT_EQ(engine.stats().n_preemptions, 0);
  EXPECT_GT(engine.stats().n_mixed_steps, 5);  // the batch really mixed decode tokens with prefill chunks
}

TEST_F(EngineTest, ChunkedPrefillEqualsWholePrefill) {
  const GenerateRequest r = greedy(ids(150, 7), 10);
  const std::vector<int32_t> want = alone(r);
  for (int64_t budget : {1, 7, 64, 512}) {
    Engine engine(*model_, {.n_blocks = 64, .block_size = 16, .max_tokens_per_step = budget});
    EXPECT_EQ(run(engine, {r}, {0})[0].ids, want) << "budget " << budget;
  }
}

TEST_F(EngineTest, APrefixCacheHitEqualsAMissAndSkipsTheSharedBlocks) {
  std::vector<int32_t> shared = ids(64, 8);
  GenerateRequest a = greedy(shared, 6), b = greedy(shared, 6);
  const std::vector<int32_t> tail_a = ids(9, 9), tail_b = ids(21, 10);
  a.prompt.insert(a.prompt.end(), tail_a.begin(), tail_a.end());
  b.prompt.insert(b.prompt.end(), tail_b.begin(), tail_b.end());

  Engine engine(*model_, {.n_blocks = 64, .block_size = 16});
  EXPECT_EQ(run(engine, {a}, {0})[0].ids, alone(a));
  const int64_t n_before = engine.stats().n_forwarded_tokens;
  EXPECT_EQ(n_before, 73 + 5);  // prompt, then one token per decode step
  EXPECT_EQ(run(engine, {b}, {0})[0].ids, alone(b));  // b after a: the 4 shared blocks are hits
  EXPECT_EQ(engine.stats().n_forwarded_tokens - n_before, (85 - 64) + 5);
  EXPECT_DOUBLE_EQ(engine.stats().prefix_hit_rate, 4.0 / (4 + 5));  // a: 4 misses; b: 4 hits, 1 miss

  Engine no_cache(*model_, {.n_blocks = 64, .block_size = 16, .enable_prefix_caching = false});
  run(no_cache, {a, b}, {0, 100});
  EXPECT_EQ(no_cache.stats().n_forwarded_tokens, 73 + 5 + 85 + 5);

  // The same prompt again: every full block but the one holding the last prompt token is reused.
  const int64_t n_mid = engine.stats().n_forwarded_tokens;
  EXPECT_EQ(run(engine, {a}, {0})[0].ids, alone(a));
  EXPECT_EQ(engine.stats().n_forwarded_tokens - n_mid, (73 - 64) + 5);
}

TEST_F(EngineTest, PreemptionByRecomputeKeepsGreedyOutputs) {
  const std::vector<GenerateRequest> requests = {greedy(ids(30, 11), 30), greedy(ids(25, 12), 30), greedy(ids(20, 13), 30),
                                                 greedy(ids(9, 14), 30)};
  Engine engine(*model_, {.n_blocks = 24, .block_size = 4, .max_tokens_per_step = 32, .max_running = 4});  // 96 entries
  const std::vector<Finished> got = run(engine, requests, {0, 0, 1, 3});
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(got[i].ids, alone(requests[i])) << "request " << i;
  EXPECT_GT(engine.stats().n_preemptions, 0);
}

TEST_F(EngineTest, SeededSamplingIsReproducibleWhateverTheBatch) {
  GenerateRequest r = greedy(ids(12, 15), 20);
  r.sampling.temperature = 1.0f;
  r.sampling.top_p = 0.9f;
  r.sampling.seed = 99;
  const std::vector<int32_t> want = generate(*model_, r, kEos, nullptr).ids;
  GenerateRequest noise = greedy(ids(33, 16), 15);
  noise.sampling.temperature = 0.8f;  // unseeded: drawn from the engine's seed
  Engine engine(*model_, {.n_blocks = 64, .block_size = 4, .max_tokens_per_step = 9});
  const std::vector<Finished> got = run(engine, {noise, r, noise, noise}, {0, 1, 1, 4});
  EXPECT_EQ(got[1].ids, want);
  r.sampling.seed = 100;
  EXPECT_NE(generate(*model_, r, kEos, nullptr).ids, want);  // the seed matters
}

TEST_F(EngineTest, StopIdsEosAndLengthEndRequests) {
  GenerateRequest eos = greedy(ids(5, 17), 50);
  eos.ignore_eos = false;
  eos.sampling.logit_bias = {{kEos, 100.0f}};
  GenerateRequest stop = greedy(ids(5, 18), 50);
  stop.sampling.logit_bias = {{1300, 100.0f}};
  stop.stop_ids = {1300};
  Engine engine(*model_, {.n_blocks = 64, .block_size = 4, .max_context = 12});
  const std::vector<Finished> got = run(engine, {eos, stop, greedy(ids(5, 19), 3), greedy(ids(9, 20), 50)}, {0, 0, 0, 0});
  EXPECT_EQ(got[0].ids, std::vector<int32_t>{kEos});
  EXPECT_EQ(got[0].finish, FinishReason::kStop);
  EXPECT_EQ(got[1].ids, std::vector<int32_t>{1300});
  EXPECT_EQ(got[1].finish, FinishReason::kStop);
  EXPECT_EQ(got[2].ids.size(), 3u);
  EXPECT_EQ(got[2].finish, FinishReason::kLength);
  EXPECT_EQ(got[3].ids.size(), 3u);  // the context of 12 holds 9 + 3
  EXPECT_EQ(got[3].finish, FinishReason::kLength);
}

TEST_F(EngineTest, CancellationFreesBlocksWithinOneStep) {
  Engine engine(*model_, {.n_blocks = 64, .block_size = 4});
  const int64_t a = engine.submit(greedy(ids(30, 21), 100));
  const int64_t b = engine.submit(greedy(ids(10, 22), 100));
  for (int i = 0; i < 3; ++i) engine.step();
  const int64_t n_b = static_cast<int64_t>(engine.scheduler().sequence(b).blocks.size());
  const int64_t n_in_use = engine.block_pool().n_in_use();
  engine.cancel(a);
  engine.cancel(12345);  // unknown: ignored
  const std::vector<RequestOutput> out = engine.step();
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out[0].id, a);
  EXPECT_EQ(out[0].finish, FinishReason::kCancelled);
  EXPECT_FALSE(engine.scheduler().contains(a));
  EXPECT_LT(engine.block_pool().n_in_use(), n_in_use);
  EXPECT_LE(engine.block_pool().n_in_use(), n_b + 1);  // only b's blocks (+1 if it crossed a block) remain
  engine.cancel(b);
  engine.step();
  EXPECT_EQ(engine.block_pool().n_in_use(), 0);
  EXPECT_FALSE(engine.has_work());
  engine.block_pool().check_invariants();
}

TEST_F(EngineTest, AdmissionRejectsPromptsThatLeaveNoRoom) {
  Engine engine(*model_, {.n_blocks = 64, .block_size = 16});  // 1024 entries; the model's context is 1024
  EXPECT_EQ(engine.max_context(), 1024);
  EXPECT_THROW(engine.submit(greedy(std::vector<int32_t>(1024, 1), 5)), InvalidRequest);
  EXPECT_NO_THROW(engine.submit(greedy(std::vector<int32_t>(1023, 1), 5)));
  EXPECT_THROW(engine.submit(greedy({}, 5)), InvalidRequest);
  EXPECT_THROW(engine.submit(greedy({1, -1}, 5)), InvalidRequest);
  EXPECT_THROW(engine.submit(greedy({1}, 0)), InvalidRequest);
  GenerateRequest bad = greedy({1}, 5);
  bad.sampling.top_p = 2;
  EXPECT_THROW(engine.submit(bad), InvalidRequest);

  Engine small(*model_, {.n_blocks = 4, .block_size = 4});  // the KV capacity (16) bounds the context
  EXPECT_EQ(small.max_context(), 16);
  EXPECT_THROW(small.submit(greedy(std::vector<int32_t>(16, 1), 5)), InvalidRequest);
  EXPECT_EQ(small.capacity_line(), "kv cache: 4 blocks x 4 tokens = 16 tokens (0.0 MiB f32); max concurrency 1.00 at context 16");
}

TEST_F(EngineTest, KvBlocksForABudgetRoundDown) {
  const io::TextConfig& t = loaded_->text();
  const int64_t per_block = t.n_layers * 16 * (t.kv_lora_rank + t.qk_rope_head_dim) * 4;  // F32 rows
  EXPECT_EQ(kv_blocks_for_bytes(t, 16, 10 * per_block), 10);
  EXPECT_EQ(kv_blocks_for_bytes(t, 16, 11 * per_block - 1), 10);
  EXPECT_EQ(kv_blocks_for_bytes(t, 16, per_block - 1), 0);
}

// Random arrivals, lengths, cancellations and stop conditions on a pool small enough to force preemption;
// invariants after every step, no block in use at the end, every request finished exactly once, and every
// greedy request that ran to the end equal to its output alone.
TEST_F(EngineTest, RandomWorkloadOnATinyPoolNeverLeaks) {
  int64_t n_preemptions = 0;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    Xoshiro256 rng(seed);
    Engine engine(*model_, {.n_blocks = 16, .block_size = 4, .max_tokens_per_step = 1 + static_cast<int64_t>(rng.next() % 24),
                            .max_running = 3, .max_context = 48, .seed = seed});
    std::map<int64_t, GenerateRequest> live;
    std::map<int64_t, std::vector<int32_t>> streamed;
    std::set<int64_t> finished;
    int n_submitted = 0;
    for (int step = 0; step < 2000 && (n_submitted < 12 || engine.has_work()); ++step) {
      if (n_submitted < 12 && rng.next() % 3 == 0) {
        // Prompts from three seeds per workload, so some share prefixes.
        const uint64_t prompt_seed = seed * 100 + rng.next() % 3;
        GenerateRequest r = greedy(ids(1 + static_cast<int64_t>(rng.next() % 40), prompt_seed), 1 + static_cast<int32_t>(rng.next() % 16));
        if (rng.next() % 2 == 0) r.sampling.temperature = 1.0f;
        live[engine.submit(r)] = r;
        ++n_submitted;
      }
      if (!live.empty() && rng.next() % 20 == 0) {
        auto it = live.begin();
        std::advance(it, static_cast<std::ptrdiff_t>(rng.next() % live.size()));
        engine.cancel(it->first);
      }
      for (const RequestOutput& o : engine.step()) {
        ASSERT_EQ(finished.count(o.id), 0u) << "output after the finish of " << o.id;
        ASSERT_EQ(live.count(o.id), 1u);
        if (o.token) streamed[o.id].push_back(*o.token);
        if (!o.finish) continue;
        ASSERT_NE(*o.finish, FinishReason::kError) << o.error;
        if (*o.finish == FinishReason::kLength && live[o.id].sampling.temperature == 0) {
          std::vector<int32_t> want = alone(live[o.id]);  // its context here (48) may cut it shorter
          want.resize(std::min(want.size(), streamed[o.id].size()));
          EXPECT_EQ(streamed[o.id], want) << "seed " << seed << " request " << o.id;
        }
        live.erase(o.id);
        finished.insert(o.id);
      }
      engine.block_pool().check_invariants();
    }
    EXPECT_EQ(finished.size(), 12u) << "seed " << seed;
    EXPECT_TRUE(live.empty()) << "seed " << seed;
    EXPECT_EQ(engine.block_pool().n_in_use(), 0) << "seed " << seed;
    n_preemptions += engine.stats().n_preemptions;
  }
  EXPECT_GT(n_preemptions, 0);
}

}  // namespace
}  // namespace quatre::engine
