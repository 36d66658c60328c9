// Sampling from a backend's summary of a row (Backend::summarize_logits + pick_from_summary) against the whole-row
// path: CpuBackend::summarize_logits equals a brute-force reference (ties, -infinity entries, -0 and +0, stacked
// edits, rows left alone); penalty_edits reproduce apply_penalties bit for bit; over many random rows, parameters and
// draws the summary gives the whole row's token or defers (both happen), with logprobs within 1e-5; the Engine gives
// the same outputs with the summary path on and off (greedy, seeded sampling with every filter, penalties, bias,
// n > 1, logprobs, a constraint).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backend/cpu/cpu_backend.h"
#include "engine/engine.h"
#include "engine/sampling.h"
#include "engine_test_util.h"

namespace quatre::engine {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The edit rule, one edit at a time in list order.
void apply_edits(std::vector<float>& l, int64_t V, std::span<const LogitEdit> edits) {
  for (const LogitEdit& e : edits) {
    float& x = l[static_cast<size_t>(e.row * V + e.id)];
    if (e.rep != 1.0f) x = x > 0 ? x / e.rep : x * e.rep;
    x = x + e.add;
  }
}

// Brute force: every finite logit sorted; sums in long double.
struct RefRow {
  std::vector<std::pair<float, int32_t>> sorted;
  long double sum_t = 0, sum_1 = 0;
  float max = kNegInf;
};
RefRow reference(std::span<const float> row, float T) {
  RefRow r;
  for (size_t i = 0; i < row.size(); ++i) {
    if (row[i] > kNegInf) r.sorted.emplace_back(row[i], static_cast<int32_t>(i));
  }
  std::sort(r.sorted.begin(), r.sorted.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  if (r.sorted.empty()) return r;
  r.max = r.sorted.front().first;
  for (const auto& [l, id] : r.sorted) {
    if (T > 0) r.sum_t += std::exp((static_cast<long double>(l) - r.max) / T);
    r.sum_1 += std::exp(static_cast<long double>(l) - r.max);
  }
  return r;
}

// Random rows with ties (values on a grid), -infinity entries, signed zeros; one row all -infinity.
std::vector<float> random_rows(int64_t R, int64_t V, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::vector<float> l(static_cast<size_t>(R * V));
  for (int64_t r = 0; r < R; ++r) {
    const float grid = r % 3 == 0 ? 0.25f : 0.0f;   // rows on a grid of 0.25: many ties
    const float p_inf = r % 4 == 1 ? 0.9f : 0.05f;  // some mostly masked rows
    for (int64_t i = 0; i < V; ++i) {
      float x = normal(rng);
      if (grid > 0) x = std::round(x / grid) * grid;
      if (unit(rng) < 0.02f) x = unit(rng) < 0.5f ? 0.0f : -0.0f;
      if (unit(rng) < p_inf) x = kNegInf;
      l[static_cast<size_t>(r * V + i)] = x;
    }
  }
  if (R > 5) std::fill_n(l.begin() + 5 * V, V, kNegInf);
  return l;
}

// Random edits sorted by (row, id), some (row, id) edited several times.
std::vector<LogitEdit> random_edits(int64_t R, int64_t V, std::mt19937_64& rng) {
  std::vector<LogitEdit> e;
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(V - 1));
  std::uniform_real_distribution<float> rep(0.5f, 2.0f), add(-3.0f, 3.0f);
  for (int32_t r = 0; r < R; ++r) {
    for (int n = 0; n < 40; ++n) e.push_back({.row = r, .id = id(rng), .rep = n % 3 == 0 ? 1.0f : rep(rng), .add = n % 4 == 0 ? 0.0f : add(rng)});
  }
  std::stable_sort(e.begin(), e.end(), [](const LogitEdit& a, const LogitEdit& b) { return std::pair(a.row, a.id) < std::pair(b.row, b.id); });
  for (size_t i = 1; i < e.size(); i += 7) e.insert(e.begin() + static_cast<std::ptrdiff_t>(i), LogitEdit{e[i - 1].row, e[i - 1].id, 1.0f, 0.5f});
  return e;
}

TEST(SummarizeLogits, CpuMatchesABruteForceReference) {
  cpu::CpuBackend be(4);
  Arena arena;
  std::mt19937_64 rng(7);
  for (const int64_t V : {int64_t{300}, int64_t{5000}, int64_t{131072}}) {
    const int64_t R = 9;
    std::vector<float> host = random_rows(R, V, rng);
    const std::vector<LogitEdit> edits = random_edits(R, V, rng);
    std::vector<RowSummaryArgs> args;
    const int32_t ks[] = {1, 64, 256, 7, 0, 256, 3, 200, 64};
    const float temps[] = {1.0f, 0.7f, 0.0f, 1.3f, 1.0f, 0.5f, 2.0f, 1.0f, 0.9f};
    for (int64_t r = 0; r < R; ++r) args.push_back({.k = ks[r], .temperature = temps[r]});
    std::vector<float> edited = host;
    apply_edits(edited, V, edits);
    Tensor t(host.data(), DType::F32, {R, V});
    const LogitsSummary s = be.summarize_logits(t, edits, args, arena);
    ASSERT_EQ(s.stride, 256);
    for (size_t i = 0; i < host.size(); ++i) ASSERT_EQ(std::bit_cast<uint32_t>(host[i]), std::bit_cast<uint32_t>(edited[i])) << i;
    for (int64_t r = 0; r < R; ++r) {
      const LogitsSummary::Row got = s.row(r);
      if (args[static_cast<size_t>(r)].k == 0) {
        EXPECT_EQ(got.stats.n_top, 0);
        EXPECT_EQ(got.stats.n_finite, 0) << "a row left alone is not counted";
        continue;
      }
      const RefRow want = reference(std::span<const float>(edited).subspan(static_cast<size_t>(r * V), static_cast<size_t>(V)),
                                    args[static_cast<size_t>(r)].temperature);
      ASSERT_EQ(got.stats.n_finite, static_cast<int32_t>(want.sorted.size())) << "V " << V << " row " << r;
      ASSERT_EQ(got.stats.n_top, std::min<int32_t>(args[static_cast<size_t>(r)].k, got.stats.n_finite));
      if (want.sorted.empty()) {
        EXPECT_EQ(got.stats.max_logit, kNegInf);
        continue;
      }
      EXPECT_EQ(got.stats.max_logit, want.max);
      for (int32_t i = 0; i < got.stats.n_top; ++i) {
        ASSERT_EQ(got.ids[static_cast<size_t>(i)], want.sorted[static_cast<size_t>(i)].second) << "V " << V << " row " << r << " rank " << i;
        ASSERT_EQ(got.logits[static_cast<size_t>(i)], want.sorted[static_cast<size_t>(i)].first);
      }
      const double T = args[static_cast<size_t>(r)].temperature;
      if (T > 0) {
        EXPECT_NEAR(got.stats.sum_exp, static_cast<double>(want.sum_t), 1e-12 * static_cast<double>(want.sum_t));
      } else {
        EXPECT_EQ(got.stats.sum_exp, 0.0);
      }
      EXPECT_NEAR(got.stats.log_sum_exp, std::log(static_cast<double>(want.sum_1)), 1e-12);
    }
  }
}

TEST(SummarizeLogits, PenaltyEditsAreApplyPenaltiesBitForBit) {
  cpu::CpuBackend be(2);
  Arena arena;
  std::mt19937_64 rng(11);
  const int64_t V = 2000;
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(V - 1)), few(0, 40);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (int trial = 0; trial < 200; ++trial) {
    SamplingParams p;
    p.repetition_penalty = trial % 2 == 0 ? 0.5f + 1.5f * u(rng) : 1.0f;
    p.frequency_penalty = trial % 3 != 0 ? -2.0f + 4.0f * u(rng) : 0.0f;
    p.presence_penalty = trial % 5 != 0 ? -2.0f + 4.0f * u(rng) : 0.0f;
    for (int b = few(rng) % 4; b > 0; --b) p.logit_bias.emplace_back(few(rng), -100.0f + 200.0f * u(rng));  // ids in the history too
    std::vector<int32_t> prompt(static_cast<size_t>(few(rng)) + 1), output(static_cast<size_t>(few(rng)));
    for (int32_t& t : prompt) t = u(rng) < 0.5f ? few(rng) : id(rng);
    for (int32_t& t : output) t = u(rng) < 0.7f ? few(rng) : id(rng);
    std::vector<float> want(static_cast<size_t>(V));
    std::normal_distribution<float> normal(0.0f, 4.0f);
    for (float& x : want) x = normal(rng);
    std::vector<float> got = want;
    apply_penalties(want, p, {.prompt = prompt, .output = output});
    std::vector<LogitEdit> edits;
    penalty_edits(p, {.prompt = prompt, .output = output}, 0, static_cast<int32_t>(V), edits);
    const RowSummaryArgs args{.k = 1, .temperature = 1.0f};
    be.summarize_logits(Tensor(got.data(), DType::F32, {1, V}), edits, std::span(&args, 1), arena);
    for (int64_t i = 0; i < V; ++i) ASSERT_EQ(std::bit_cast<uint32_t>(got[static_cast<size_t>(i)]), std::bit_cast<uint32_t>(want[static_cast<size_t>(i)])) << "trial " << trial << " id " << i;
  }
}

// Random parameters that exercise every rule, and either the summary or the fallback.
SamplingParams random_params(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> pick(0, 99);
  const float temps[] = {0.0f, 0.3f, 0.7f, 1.0f, 1.0f, 1.5f};
  const int32_t top_ks[] = {0, 0, 0, 1, 5, 40, 64, 100, 300, 5000};
  const float top_ps[] = {1.0f, 1.0f, 0.5f, 0.9f, 0.99f, 0.999f};
  const float min_ps[] = {0.0f, 0.0f, 0.01f, 0.05f, 0.2f};
  SamplingParams p;
  p.temperature = temps[pick(rng) % 6];
  p.top_k = top_ks[pick(rng) % 10];
  p.top_p = top_ps[pick(rng) % 6];
  p.min_p = min_ps[pick(rng) % 5];
  if (pick(rng) < 30) p.repetition_penalty = 1.3f;
  if (pick(rng) < 30) p.frequency_penalty = 0.5f, p.presence_penalty = 0.25f;
  if (pick(rng) < 20) p.logit_bias = {{pick(rng), 5.0f}, {pick(rng), -100.0f}};
  return p;
}

// The engine's k for these parameters (Engine::step).
int32_t summary_k(const SamplingParams& p, int32_t top_logprobs) {
  return std::clamp(std::max({64, p.top_k, top_logprobs}), 1, kMaxSummaryK);
}

TEST(SummarizeLogits, SummaryPathGivesTheWholeRowsTokenOrDefers) {
  cpu::CpuBackend be(4);
  Arena arena;
  std::mt19937_64 rng(2024);
  const int64_t V = 8192, R = 8;
  int n_summary = 0, n_fallback = 0, n_greedy = 0;
  std::map<std::string, int> fallback_by_kind;
  SamplerScratch scratch;
  for (int batch = 0; batch < 100; ++batch) {
    // Rows from flat (nothing cut within 64) to peaked (a few tokens hold the mass).
    std::vector<float> raw(static_cast<size_t>(R * V));
    const float scales[] = {0.3f, 1.0f, 3.0f, 8.0f};
    for (int64_t r = 0; r < R; ++r) {
      std::normal_distribution<float> normal(0.0f, scales[(batch + r) % 4]);
      for (int64_t i = 0; i < V; ++i) raw[static_cast<size_t>(r * V + i)] = normal(rng);
    }
    std::vector<SamplingParams> params;
    std::vector<std::vector<int32_t>> prompts, outputs;
    std::vector<LogitEdit> edits;
    std::vector<RowSummaryArgs> args;
    for (int32_t r = 0; r < R; ++r) {
      params.push_back(random_params(rng));
      std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(V - 1));
      prompts.emplace_back(20), outputs.emplace_back(10);
      for (int32_t& t : prompts.back()) t = id(rng) % 300;
      for (int32_t& t : outputs.back()) t = id(rng) % 300;
      penalty_edits(params.back(), {.prompt = prompts.back(), .output = outputs.back()}, r, static_cast<int32_t>(V), edits);
      args.push_back({.k = summary_k(params.back(), 5), .temperature = params.back().temperature});
    }
    std::vector<float> edited = raw;
    const LogitsSummary s = be.summarize_logits(Tensor(edited.data(), DType::F32, {R, V}), edits, args, arena);
    for (int64_t r = 0; r < R; ++r) {
      const SamplingParams& p = params[static_cast<size_t>(r)];
      std::vector<float> row(raw.begin() + r * V, raw.begin() + (r + 1) * V);
      apply_penalties(row, p, {.prompt = prompts[static_cast<size_t>(r)], .output = outputs[static_cast<size_t>(r)]});
      const std::span<const float> edited_row(edited.data() + r * V, static_cast<size_t>(V));
      ASSERT_TRUE(std::equal(row.begin(), row.end(), edited_row.begin()));
      const LogSoftmax lsm = log_softmax(row);
      const std::vector<int32_t> top5 = top_ids(row, 5);
      for (int draw = 0; draw < 8; ++draw) {
        const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
        const int32_t want = pick_token(row, p, u, scratch);
        const std::optional<int32_t> got = pick_from_summary(s.row(r), p, u);
        if (!got) {
          ++n_fallback;
          ++fallback_by_kind[p.top_k > kMaxSummaryK ? "top_k > 256" : p.top_p < 1 ? "top_p" : p.min_p > 0 ? "min_p" : "draw"];
          EXPECT_EQ(pick_token(edited_row, p, u, scratch), want);  // the fallback: the edited row, the same u
          continue;
        }
        ++n_summary;
        n_greedy += p.temperature == 0 ? 1 : 0;
        ASSERT_EQ(*got, want) << "row " << r << " T " << p.temperature << " top_k " << p.top_k << " top_p " << p.top_p
                              << " min_p " << p.min_p << " u " << u;
        const LogitsSummary::Row sr = s.row(r);
        const auto rank = static_cast<size_t>(std::find(sr.ids.begin(), sr.ids.end(), *got) - sr.ids.begin());
        ASSERT_LT(rank, sr.ids.size());
        EXPECT_NEAR(summary_logprob(sr, sr.logits[rank]), lsm.at(row[static_cast<size_t>(want)]), 1e-5);
        for (size_t i = 0; i < top5.size(); ++i) {
          ASSERT_EQ(sr.ids[i], top5[i]);
          EXPECT_NEAR(summary_logprob(sr, sr.logits[i]), lsm.at(row[static_cast<size_t>(top5[i])]), 1e-5);
        }
      }
    }
  }
  std::string kinds;
  for (const auto& [k, n] : fallback_by_kind) kinds += " " + k + ": " + std::to_string(n);
  std::printf("summary picks %d (greedy %d), fallbacks %d (%s)\n", n_summary, n_greedy, n_fallback, kinds.c_str());
  EXPECT_GT(n_summary, 1500);
  EXPECT_GT(n_summary - n_greedy, 700) << "the summary decides sampled tokens, not only greedy ones";
  EXPECT_GT(n_fallback, 200);
}

// A constraint that allows only even ids (the summary path leaves its rows to the host).
class EvenIds final : public TokenConstraint {
 public:
  void mask(std::span<float> logits) override {
    for (size_t i = 1; i < logits.size(); i += 2) logits[i] = kNegInf;
  }
  void accept(int32_t token) override { ASSERT_EQ(token % 2, 0); }
  bool is_complete() const override { return false; }
  std::unique_ptr<TokenConstraint> clone() const override { return std::make_unique<EvenIds>(); }
};

class EngineSummary : public test::TinyModelTest {
 protected:
  struct Out {
    std::vector<int32_t> ids;
    std::vector<float> logprobs;
    std::vector<std::vector<TokenLogprob>> top;
  };
  // Every request's choices' outputs, keyed by (submission index, choice).
  static std::map<std::pair<size_t, int32_t>, Out> run(bool on_backend, const std::vector<GenerateRequest>& requests, EngineStats* stats) {
    Engine engine(*model_, {.n_blocks = 256, .block_size = 4, .max_tokens_per_step = 32, .max_running = 16, .sample_on_backend = on_backend});
    std::map<int64_t, size_t> index;
    for (size_t i = 0; i < requests.size(); ++i) index[engine.submit(requests[i])] = i;
    std::map<std::pair<size_t, int32_t>, Out> out;
    while (engine.has_work()) {
      for (const RequestOutput& o : engine.step()) {
        EXPECT_TRUE(o.error.empty()) << o.error;
        Out& d = out[{index.at(o.id), o.choice}];
        if (o.token) d.ids.push_back(*o.token);
        if (o.logprob) d.logprobs.push_back(*o.logprob);
        if (!o.top_logprobs.empty()) d.top.push_back(o.top_logprobs);
      }
    }
    *stats = engine.stats();
    return out;
  }
};

TEST_F(EngineSummary, SameOutputsWithTheSummaryPathOnAndOff) {
  std::vector<GenerateRequest> requests;
  for (int i = 0; i < 12; ++i) {
    GenerateRequest r = greedy(ids(5 + 7 * i, 100 + static_cast<uint64_t>(i)), 24);
    SamplingParams& p = r.sampling;
    p.seed = 1000 + static_cast<uint64_t>(i);
    switch (i % 6) {
      case 0: break;  // greedy
      case 1: p.temperature = 0.8f; break;
      case 2: p.temperature = 1.0f, p.top_p = 0.9f, p.top_k = 50; break;
      case 3: p.temperature = 0.7f, p.min_p = 0.05f, p.repetition_penalty = 1.3f; break;
      case 4: p.temperature = 1.2f, p.frequency_penalty = 0.6f, p.presence_penalty = 0.4f, p.logit_bias = {{7, 3.0f}, {9, -100.0f}}; break;
      case 5: p.temperature = 0.01f, p.top_p = 0.5f; break;  // nearly greedy: decided by the summary
    }
    r.logprobs = i % 2 == 0;
    r.top_logprobs = i % 3 == 0 ? 5 : 0;
    r.n = i % 4 == 1 ? 3 : 1;
    if (i == 7) r.constraint = std::make_shared<EvenIds>();
    requests.push_back(std::move(r));
  }
  EngineStats on_stats, off_stats;
  const auto on = run(true, requests, &on_stats);
  const auto off = run(false, requests, &off_stats);
  ASSERT_EQ(on.size(), off.size());
  for (const auto& [key, want] : off) {
    const Out& got = on.at(key);
    EXPECT_EQ(got.ids, want.ids) << "request " << key.first << " choice " << key.second;
    ASSERT_EQ(got.logprobs.size(), want.logprobs.size());
    for (size_t i = 0; i < want.logprobs.size(); ++i) EXPECT_NEAR(got.logprobs[i], want.logprobs[i], 1e-5);
    ASSERT_EQ(got.top.size(), want.top.size());
    for (size_t i = 0; i < want.top.size(); ++i) {
      ASSERT_EQ(got.top[i].size(), want.top[i].size());
      for (size_t j = 0; j < want.top[i].size(); ++j) {
        EXPECT_EQ(got.top[i][j].token, want.top[i][j].token);
        EXPECT_NEAR(got.top[i][j].logprob, want.top[i][j].logprob, 1e-5);
      }
    }
  }
  std::printf("summary picks %lld, fallbacks %lld\n", static_cast<long long>(on_stats.n_summary_samples),
              static_cast<long long>(on_stats.n_summary_fallbacks));
  EXPECT_GT(on_stats.n_summary_samples, 0);
  EXPECT_EQ(off_stats.n_summary_samples + off_stats.n_summary_fallbacks, 0);
}

}  // namespace
}  // namespace quatre::engine
