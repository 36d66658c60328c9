// Engine features on top of the batch loop, on the tiny model (CPU): n > 1 choices that share the prompt's
// prefill and blocks (each equals a lone request seeded with its choice seed, under preemption too);
// logprobs / top_logprobs against an independent double-precision log-softmax of the model's logits; the
// TokenConstraint hook (an increasing-ids constraint obeyed in a batch with n > 1, everything masked -> error).
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <unordered_map>

#include <gtest/gtest.h>

#include "core/arena.h"
#include "core/error.h"
#include "core/rng.h"
#include "engine/engine.h"
#include "engine_test_util.h"
#include "model/kv_cache.h"
#include "model/step_inputs.h"

namespace quatre::engine {
namespace {

constexpr int32_t kEos = 2;

struct Choice {
  std::vector<int32_t> ids;
  std::vector<RequestOutput> outputs;
  std::optional<FinishReason> finish;
  std::string error;
};

// Only ids in (last, last + step] of the last accepted id (first: [0, step)); complete after `length` tokens.
class IncreasingIds : public TokenConstraint {
 public:
  IncreasingIds(int32_t length, int32_t step) : length_(length), step_(step) {}
  bool allowed(int32_t id) const { return id > last_ && id <= last_ + step_; }
  void mask(std::span<float> logits) override {
    for (size_t i = 0; i < logits.size(); ++i) {
      if (!allowed(static_cast<int32_t>(i))) logits[i] = -std::numeric_limits<float>::infinity();
    }
  }
  void accept(int32_t token) override {
    if (!allowed(token)) throw InvalidRequest("IncreasingIds: token not allowed");
    last_ = token;
    ++n_;
  }
  bool is_complete() const override { return n_ >= length_; }
  std::unique_ptr<TokenConstraint> clone() const override { return std::make_unique<IncreasingIds>(*this); }

 private:
  int32_t length_, step_;
  int32_t last_ = -1, n_ = 0;
};

// Masks everything once `after` tokens were accepted.
class Dead : public TokenConstraint {
 public:
  explicit Dead(int32_t after) : after_(after) {}
  void mask(std::span<float> logits) override {
    if (n_ >= after_) std::fill(logits.begin(), logits.end(), -std::numeric_limits<float>::infinity());
  }
  void accept(int32_t) override { ++n_; }
  bool is_complete() const override { return false; }
  std::unique_ptr<TokenConstraint> clone() const override { return std::make_unique<Dead>(*this); }

 private:
  int32_t after_, n_ = 0;
};

class EngineChoicesTest : public test::TinyModelTest {
 protected:
  static GenerateRequest sampled(std::vector<int32_t> prompt, int32_t max_tokens, uint64_t seed) {
    GenerateRequest r = greedy(std::move(prompt), max_tokens);
    r.sampling.temperature = 1.0f;
    r.sampling.seed = seed;
    return r;
  }

  // Submits requests[i] before step arrivals[i], steps until idle, checks the pool after every step; returns,
  // by submission index, each choice's outputs. Each request gets exactly one is_last, on its last output.
  static std::vector<std::vector<Choice>> run(Engine& engine, const std::vector<GenerateRequest>& requests,
                                              const std::vector<int>& arrivals) {
    std::map<int64_t, size_t> index;
    std::vector<std::vector<Choice>> out(requests.size());
    std::vector<bool> done(requests.size(), false);
    size_t next = 0;
    for (int step = 0; step < 10000; ++step) {
      for (; next < requests.size() && arrivals[next] <= step; ++next) {
        index[engine.submit(requests[next])] = next;
        out[next].resize(static_cast<size_t>(requests[next].n));
      }
      if (next == requests.size() && !engine.has_work()) break;
      for (const RequestOutput& o : engine.step()) {
        const size_t i = index.at(o.id);
        EXPECT_FALSE(done[i]) << "output after is_last, request " << i;
        Choice& c = out[i].at(static_cast<size_t>(o.choice));
        EXPECT_FALSE(c.finish.has_value()) << "output after finish, request " << i << " choice " << o.choice;
        if (o.token) c.ids.push_back(*o.token);
        c.outputs.push_back(o);
        if (o.finish) {
          c.finish = o.finish;
          c.error = o.error;
        }
        if (o.is_last) {
          done[i] = true;
          for (const Choice& each : out[i]) EXPECT_TRUE(each.finish.has_value()) << "is_last before every choice finished";
        }
      }
      engine.block_pool().check_invariants();
    }
    EXPECT_FALSE(engine.has_work());
    EXPECT_EQ(engine.block_pool().n_in_use(), 0);
    for (size_t i = 0; i < done.size(); ++i) EXPECT_TRUE(done[i]) << "request " << i << " never reported is_last";
    return out;
  }

  static std::vector<int32_t> lone(GenerateRequest r, int32_t choice) {
    r.n = 1;
    r.sampling.seed = choice_seed(*r.sampling.seed, choice);
    return generate(*model_, r, kEos, nullptr).ids;
  }

  // [n, V] logits of every position of `seq`, in one whole forward (independent of the engine's batching).
  static std::vector<float> all_logits(const std::vector<int32_t>& seq) {
    const int64_t n = static_cast<int64_t>(seq.size()), V = model_->config().vocab_size;
    model::KvCache kv(model_->config(), model_->backend(), {.n_blocks = (n + 15) / 16, .block_size = 16});
    const std::vector<int32_t> blocks = kv.allocate((n + 15) / 16);
    model::StepBuilder b(16);
    b.add({.block_table = blocks, .n_cached = 0, .ids = seq, .positions = {}}, model::LogitRows::kAll);
    Arena arena(model_->backend().memory());
    const Tensor t = model_->forward(b.inputs(), kv, arena);
    std::vector<float> host(static_cast<size_t>(n * V));
    model_->backend().copy_to_host(t, host.data());
    return host;
  }
};

TEST_F(EngineChoicesTest, EachChoiceEqualsALoneRequestWithItsSeedAndThePromptIsPrefilledOnce) {
  GenerateRequest r = sampled(ids(40, 31), 12, 1234);
  r.n = 4;
  // Prefix caching off: the sharing comes from the fork, not from the prefix cache.
  Engine engine(*model_, {.n_blocks = 64, .block_size = 16, .enable_prefix_caching = false});
  const std::vector<std::vector<Choice>> got = run(engine, {r}, {0});
  std::vector<std::vector<int32_t>> distinct;
  for (int32_t c = 0; c < r.n; ++c) {
    const Choice& ch = got[0][static_cast<size_t>(c)];
    EXPECT_EQ(ch.ids, lone(r, c)) << "choice " << c;
    EXPECT_EQ(ch.finish, FinishReason::kLength);
    if (std::find(distinct.begin(), distinct.end(), ch.ids) == distinct.end()) distinct.push_back(ch.ids);
  }
  EXPECT_GE(distinct.size(), 3u);  // independent streams
  // Choice 0 with seed S is the request with n = 1 and seed S.
  GenerateRequest one = r;
  one.n = 1;
  EXPECT_EQ(got[0][0].ids, generate(*model_, one, kEos, nullptr).ids);
  // The prompt (40 = 2 full blocks + 8) once; each other choice recomputes its 8 partial entries and its first
  // token; then one token per decode step.
  const int64_t P = 40, M = 12;
  EXPECT_EQ(engine.stats().n_forwarded_tokens, P + (M - 1) + (r.n - 1) * ((P % 16) + 1 + (M - 2)));
}

TEST_F(EngineChoicesTest, ChoicesShareThePromptsFullBlocksByRefcount) {
  GenerateRequest r = sampled(ids(35, 32), 30, 7);
  r.n = 3;
  Engine engine(*model_, {.n_blocks = 64, .block_size = 16, .enable_prefix_caching = false});
  engine.submit(r);
  engine.step();  // the prompt's prefill; the first tokens; the forks
  const std::vector<int32_t> blocks0 = engine.scheduler().sequence(1).blocks;
  ASSERT_EQ(blocks0.size(), 3u);
  EXPECT_EQ(engine.block_pool().refcount(blocks0[0]), 3);
  EXPECT_EQ(engine.block_pool().refcount(blocks0[1]), 3);
  EXPECT_EQ(engine.block_pool().refcount(blocks0[2]), 1);  // the partial block is choice 0's own
  engine.step();                                          // the other choices' partial blocks
  EXPECT_EQ(engine.block_pool().n_in_use(), 2 + 3);
  engine.cancel(1);
  const std::vector<RequestOutput> out = engine.step();
  ASSERT_EQ(out.size(), 3u);
  for (int32_t c = 0; c < 3; ++c) {
    EXPECT_EQ(out[static_cast<size_t>(c)].choice, c);
    EXPECT_EQ(out[static_cast<size_t>(c)].finish, FinishReason::kCancelled);
    EXPECT_EQ(out[static_cast<size_t>(c)].is_last, c == 2);
  }
  EXPECT_EQ(engine.block_pool().n_in_use(), 0);
  EXPECT_FALSE(engine.has_work());
}

TEST_F(EngineChoicesTest, PreemptingChoicesKeepsEveryChoiceEqualToItsLoneRequest) {
  GenerateRequest a = sampled(ids(22, 33), 30, 11), b = sampled(ids(13, 34), 25, 12);
  a.n = 3;
  b.n = 2;
  const GenerateRequest c = greedy(ids(17, 35), 30);
  Engine engine(*model_, {.n_blocks = 30, .block_size = 4, .max_tokens_per_step = 24, .max_running = 6});  // 120 entries
  const std::vector<std::vector<Choice>> got = run(engine, {a, b, c}, {0, 1, 2});
  for (int32_t i = 0; i < a.n; ++i) EXPECT_EQ(got[0][static_cast<size_t>(i)].ids, lone(a, i)) << "a choice " << i;
  for (int32_t i = 0; i < b.n; ++i) EXPECT_EQ(got[1][static_cast<size_t>(i)].ids, lone(b, i)) << "b choice " << i;
  EXPECT_EQ(got[2][0].ids, generate(*model_, c, kEos, nullptr).ids);
  EXPECT_GT(engine.stats().n_preemptions, 0);
}

TEST_F(EngineChoicesTest, ChoicesFinishIndependently) {
  // A stop id that sampling at temperature 1 with a strong bias hits on some choices' first token only: every
  // choice reports its own finish, and the request ends once all have.
  GenerateRequest r = sampled(ids(9, 36), 6, 5);
  r.n = 8;
  r.stop_ids = {1300};
  r.sampling.logit_bias = {{1300, 4.0f}};
  Engine engine(*model_, {.n_blocks = 64, .block_size = 4});
  const std::vector<std::vector<Choice>> got = run(engine, {r}, {0});
  int n_stopped = 0, n_length = 0;
  for (int32_t c = 0; c < r.n; ++c) {
    const Choice& ch = got[0][static_cast<size_t>(c)];
    EXPECT_EQ(ch.ids, lone(r, c)) << "choice " << c;
    n_stopped += ch.finish == FinishReason::kStop ? 1 : 0;
    n_length += ch.finish == FinishReason::kLength ? 1 : 0;
  }
  EXPECT_EQ(n_stopped + n_length, r.n);
  EXPECT_GT(n_stopped, 0);  // (seed 5: some choices stop early, others run to max_tokens)
  EXPECT_GT(n_length, 0);
}

TEST_F(EngineChoicesTest, SubmitValidatesNAndTopLogprobs) {
  Engine engine(*model_, {.n_blocks = 8, .block_size = 4});
  auto message = [&](GenerateRequest r) -> std::string {
    try {
      engine.submit(std::move(r));
    } catch (const InvalidRequest& e) {
      return e.what();
    }
    return "accepted";
  };
  GenerateRequest r = greedy(ids(6, 37), 4);
  r.n = 0;
  EXPECT_EQ(message(r).rfind("n: ", 0), 0u);
  r.n = 17;
  EXPECT_EQ(message(r).rfind("n: ", 0), 0u);
  r.n = 16;  // 6 tokens: 1 shared block + 16 x 1 own block > 8 blocks
  EXPECT_NE(message(r).find("KV blocks"), std::string::npos);
  r.n = 7;  // 1 + 7 fits
  EXPECT_EQ(message(r), "accepted");
  r.n = 1;
  r.top_logprobs = 21;
  EXPECT_EQ(message(r).rfind("top_logprobs: ", 0), 0u);
  r.top_logprobs = -1;
  EXPECT_EQ(message(r).rfind("top_logprobs: ", 0), 0u);
  r.top_logprobs = 20;
  EXPECT_EQ(message(r), "accepted");
}

// The reference: penalties and bias applied in double to the whole-forward logits, log-softmax in double.
TEST_F(EngineChoicesTest, LogprobsMatchADoublePrecisionLogSoftmaxAfterPenaltiesAndBias) {
  GenerateRequest r = sampled(ids(20, 38), 10, 77);
  r.n = 2;
  r.logprobs = true;
  r.top_logprobs = 5;
  r.sampling.temperature = 0.7f;  // not part of the reported distribution
  r.sampling.top_k = 3;           // nor is top-k
  r.sampling.repetition_penalty = 1.3f;
  r.sampling.frequency_penalty = 0.5f;
  r.sampling.presence_penalty = 0.25f;
  r.sampling.logit_bias = {{7, 3.0f}, {11, -2.0f}};
  Engine engine(*model_, {.n_blocks = 64, .block_size = 4, .max_tokens_per_step = 8});
  const std::vector<std::vector<Choice>> got = run(engine, {r, greedy(ids(30, 39), 12)}, {0, 0});
  const int64_t V = model_->config().vocab_size;
  for (int32_t c = 0; c < r.n; ++c) {
    const Choice& ch = got[0][static_cast<size_t>(c)];
    ASSERT_EQ(ch.outputs.size(), 10u);
    std::vector<int32_t> seq = r.prompt;
    seq.insert(seq.end(), ch.ids.begin(), ch.ids.end() - 1);
    const std::vector<float> logits = all_logits(seq);
    for (size_t t = 0; t < ch.ids.size(); ++t) {
      const size_t pos = r.prompt.size() - 1 + t;
      std::vector<double> l(logits.begin() + static_cast<std::ptrdiff_t>(pos * V), logits.begin() + static_cast<std::ptrdiff_t>((pos + 1) * V));
      std::unordered_map<int32_t, int> count;
      for (size_t j = 0; j < t; ++j) ++count[ch.ids[j]];
      std::vector<bool> seen(static_cast<size_t>(V), false);
      for (int32_t id : r.prompt) seen[static_cast<size_t>(id)] = true;
      for (size_t j = 0; j < t; ++j) seen[static_cast<size_t>(ch.ids[j])] = true;
      for (int64_t v = 0; v < V; ++v) {
        double& x = l[static_cast<size_t>(v)];
        if (seen[static_cast<size_t>(v)]) x = x > 0 ? x / 1.3 : x * 1.3;
        const auto it = count.find(static_cast<int32_t>(v));
        if (it != count.end()) x -= 0.5 * it->second + 0.25;
      }
      l[7] += 3.0;
      l[11] -= 2.0;
      const double mx = *std::max_element(l.begin(), l.end());
      double sum = 0;
      for (double x : l) sum += std::exp(x - mx);
      auto ref = [&](int32_t id) { return l[static_cast<size_t>(id)] - mx - std::log(sum); };
      const RequestOutput& o = ch.outputs[t];
      ASSERT_TRUE(o.logprob.has_value());
      EXPECT_NEAR(*o.logprob, ref(ch.ids[t]), 2e-4) << "choice " << c << " token " << t;
      ASSERT_EQ(o.top_logprobs.size(), 5u);
      std::vector<int32_t> order(static_cast<size_t>(V));
      for (int32_t v = 0; v < V; ++v) order[static_cast<size_t>(v)] = v;
      std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return l[static_cast<size_t>(a)] > l[static_cast<size_t>(b)]; });
      for (size_t k = 0; k < 5; ++k) {
        EXPECT_EQ(o.top_logprobs[k].token, order[k]) << "choice " << c << " token " << t << " rank " << k;
        EXPECT_NEAR(o.top_logprobs[k].logprob, ref(order[k]), 2e-4);
      }
      // top_k = 3: the sampled token is among the 3 most likely.
      EXPECT_TRUE(std::find(order.begin(), order.begin() + 3, ch.ids[t]) != order.begin() + 3);
    }
  }
  // A request without logprobs reports none.
  for (const RequestOutput& o : got[1][0].outputs) {
    EXPECT_FALSE(o.logprob.has_value());
    EXPECT_TRUE(o.top_logprobs.empty());
  }
}

TEST_F(EngineChoicesTest, TheEngineObeysATokenConstraintInABatchWithSeveralChoices) {
  const int32_t step = 100, length = 7;
  GenerateRequest r = sampled(ids(11, 40), 50, 3);
  r.n = 3;
  r.logprobs = true;
  r.top_logprobs = 4;
  r.constraint = std::make_shared<IncreasingIds>(length, step);
  GenerateRequest greedy_constrained = greedy(ids(26, 41), 50);
  greedy_constrained.constraint = r.constraint;  // one shared prototype: each request clones its own
  GenerateRequest free_request = sampled(ids(14, 42), 9, 4);
  Engine engine(*model_, {.n_blocks = 64, .block_size = 4, .max_tokens_per_step = 10});
  const std::vector<std::vector<Choice>> got = run(engine, {r, greedy_constrained, free_request}, {0, 1, 1});
  auto check = [&](const Choice& ch, const char* what) {
    ASSERT_EQ(ch.ids.size(), static_cast<size_t>(length)) << what;
    EXPECT_EQ(ch.finish, FinishReason::kStop) << what;  // complete, without sampling EOS
    for (size_t i = 0; i < ch.ids.size(); ++i) {
      const int32_t before = i == 0 ? -1 : ch.ids[i - 1];
      EXPECT_GT(ch.ids[i], before) << what;
      EXPECT_LE(ch.ids[i], before + step) << what;
    }
  };
  for (const Choice& ch : got[0]) {
    check(ch, "sampled choice");
    for (size_t i = 0; i < ch.outputs.size(); ++i) {
      const int32_t before = i == 0 ? -1 : ch.ids[i - 1];
      EXPECT_EQ(ch.outputs[i].top_logprobs.size(), 4u);
      for (const TokenLogprob& alt : ch.outputs[i].top_logprobs) {  // alternatives are allowed tokens too
        EXPECT_GT(alt.token, before);
        EXPECT_LE(alt.token, before + step);
      }
    }
  }
  check(got[1][0], "greedy");
  EXPECT_EQ(got[2][0].ids, generate(*model_, free_request, kEos, nullptr).ids);  // the batch around it is unaffected
  EXPECT_NE(got[0][0].ids, got[0][1].ids);
}

TEST_F(EngineChoicesTest, AConstraintThatMasksEverythingEndsTheChoiceWithAnError) {
  GenerateRequest r = sampled(ids(10, 43), 20, 8);
  r.n = 2;
  r.constraint = std::make_shared<Dead>(3);
  const GenerateRequest other = greedy(ids(12, 44), 8);
  Engine engine(*model_, {.n_blocks = 32, .block_size = 4});
  const std::vector<std::vector<Choice>> got = run(engine, {r, other}, {0, 0});
  for (const Choice& ch : got[0]) {
    EXPECT_EQ(ch.ids.size(), 3u);
    EXPECT_EQ(ch.finish, FinishReason::kError);
    EXPECT_NE(ch.error.find("masked out"), std::string::npos) << ch.error;
  }
  EXPECT_EQ(got[1][0].ids, generate(*model_, other, kEos, nullptr).ids);
  EXPECT_EQ(got[1][0].finish, FinishReason::kLength);
}

// Random arrivals of requests with 1-4 choices (greedy or seeded), random cancellations, a pool small enough to
// preempt single choices: every choice finishes once, the request reports is_last once, no block leaks, and
// every choice that was not cancelled equals its lone request (as far as the context of 48 let it run).
TEST_F(EngineChoicesTest, RandomWorkloadWithChoicesNeverLeaksAndKeepsEveryChoice) {
  int64_t n_preemptions = 0;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    Xoshiro256 rng(seed);
    Engine engine(*model_, {.n_blocks = 20, .block_size = 4, .max_tokens_per_step = 2 + static_cast<int64_t>(rng.next() % 24),
                            .max_running = 4, .max_context = 48, .seed = seed});
    std::map<int64_t, GenerateRequest> live;
    std::map<std::pair<int64_t, int32_t>, std::vector<int32_t>> streamed;
    std::set<std::pair<int64_t, int32_t>> finished;
    std::set<int64_t> cancelled, done;
    int n_submitted = 0;
    for (int step = 0; step < 3000 && (n_submitted < 10 || engine.has_work()); ++step) {
      if (n_submitted < 10 && rng.next() % 3 == 0) {
        GenerateRequest r = greedy(ids(1 + static_cast<int64_t>(rng.next() % 30), seed * 100 + rng.next() % 3), 1 + static_cast<int32_t>(rng.next() % 14));
        r.n = 1 + static_cast<int32_t>(rng.next() % 4);
        if (rng.next() % 2 == 0) {
          r.sampling.temperature = 1.0f;
          r.sampling.seed = rng.next();
        }
        live[engine.submit(r)] = r;
        ++n_submitted;
      }
      if (!live.empty() && rng.next() % 25 == 0) {
        auto it = live.begin();
        std::advance(it, static_cast<std::ptrdiff_t>(rng.next() % live.size()));
        engine.cancel(it->first);
        cancelled.insert(it->first);
      }
      for (const RequestOutput& o : engine.step()) {
        const std::pair<int64_t, int32_t> key{o.id, o.choice};
        ASSERT_EQ(finished.count(key), 0u) << "output after the finish of " << o.id << "/" << o.choice;
        ASSERT_EQ(live.count(o.id), 1u);
        ASSERT_LT(o.choice, live[o.id].n);
        if (o.token) streamed[key].push_back(*o.token);
        if (o.finish) {
          ASSERT_NE(*o.finish, FinishReason::kError) << o.error;
          finished.insert(key);
          if (cancelled.count(o.id) == 0) {
            EXPECT_EQ(*o.finish, FinishReason::kLength);
            GenerateRequest r = live[o.id];
            if (!r.sampling.seed) r.sampling.seed = 0;  // greedy: the seed is unused
            std::vector<int32_t> want = lone(r, o.choice);
            want.resize(std::min(want.size(), streamed[key].size()));
            EXPECT_EQ(streamed[key], want) << "seed " << seed << " request " << o.id << " choice " << o.choice;
          }
        }
        if (o.is_last) {
          for (int32_t c = 0; c < live[o.id].n; ++c) EXPECT_EQ(finished.count({o.id, c}), 1u);
          live.erase(o.id);
          done.insert(o.id);
        }
      }
      engine.block_pool().check_invariants();
    }
    EXPECT_EQ(done.size(), 10u) << "seed " << seed;
    EXPECT_TRUE(live.empty()) << "seed " << seed;
    EXPECT_EQ(engine.block_pool().n_in_use(), 0) << "seed " << seed;
    n_preemptions += engine.stats().n_preemptions;
  }
  EXPECT_GT(n_preemptions, 0);
}

}  // namespace
}  // namespace quatre::engine
