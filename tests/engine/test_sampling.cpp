// Sampling: greedy, each filter against its definition, penalties as OpenAI/vLLM define them, seeded
// reproducibility, and the empirical distribution of draws against the softmax (chi-square).
#include <cmath>
#include <map>
#include <vector>

#include <gtest/gtest.h>

#include "core/error.h"
#include "engine/sampling.h"

namespace quatre::engine {
namespace {

int32_t draw(std::vector<float> logits, const SamplingParams& p, SamplerRng& rng, TokenHistory h = {}) {
  SamplerScratch scratch;
  return sample_token(logits, p, h, rng, scratch);
}

// The set of ids a filter lets through: draw many times and collect.
std::map<int32_t, int> histogram(const std::vector<float>& logits, const SamplingParams& p, int n, uint64_t seed = 1) {
  SamplerRng rng(seed);
  std::map<int32_t, int> h;
  for (int i = 0; i < n; ++i) ++h[draw(logits, p, rng)];
  return h;
}

TEST(Sampling, GreedyIsArgmaxWithLowestIdOnTies) {
  SamplerRng rng(0);
  SamplingParams p;
  p.temperature = 0;
  EXPECT_EQ(draw({0.1f, 3.0f, -1.0f, 3.0f}, p, rng), 1);
  EXPECT_EQ(draw({-5.0f}, p, rng), 0);
}

TEST(Sampling, DrawsFollowTheSoftmaxAtTheTemperature) {
  const std::vector<float> logits = {1.0f, 0.0f, -0.5f, 2.0f, 0.5f};
  SamplingParams p;
  p.temperature = 0.7f;
  const int n = 200000;
  const std::map<int32_t, int> h = histogram(logits, p, n);
  double total = 0;
  std::vector<double> want(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) total += want[i] = std::exp(logits[i] / 0.7);
  double chi2 = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const double expected = n * want[i] / total;
    const double got = h.count(static_cast<int32_t>(i)) ? h.at(static_cast<int32_t>(i)) : 0;
    chi2 += (got - expected) * (got - expected) / expected;
  }
  EXPECT_LT(chi2, 18.5);  // chi-square, 4 degrees of freedom, p = 0.001
}

TEST(Sampling, TopKKeepsTheKLargest) {
  SamplingParams p;
  p.top_k = 2;
  const auto h = histogram({1.0f, 5.0f, 4.9f, 0.0f}, p, 5000);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_TRUE(h.count(1) && h.count(2));
}

TEST(Sampling, TopPKeepsTheSmallestPrefixReachingP) {
  // probabilities 0.5, 0.3, 0.2 (logits are their logs)
  const std::vector<float> logits = {std::log(0.2f), std::log(0.5f), std::log(0.3f)};
  SamplingParams p;
  p.top_p = 0.75f;  // 0.5 + 0.3 reaches it
  EXPECT_EQ(histogram(logits, p, 5000).size(), 2u);
  p.top_p = 0.4f;  // the first token alone
  EXPECT_EQ(histogram(logits, p, 5000), (std::map<int32_t, int>{{1, 5000}}));
}

TEST(Sampling, MinPDropsTokensBelowAFractionOfTheBest) {
  const std::vector<float> logits = {std::log(0.6f), std::log(0.25f), std::log(0.1f), std::log(0.05f)};
  SamplingParams p;
  p.min_p = 0.2f;  // floor 0.12: keeps 0.6 and 0.25
  const auto h = histogram(logits, p, 5000);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_TRUE(h.count(0) && h.count(1));
}

TEST(Sampling, PenaltiesAndBiasChangeTheLogitsAsDefined) {
  SamplingParams p;
  p.temperature = 0;
  p.frequency_penalty = 1.0f;
  p.presence_penalty = 0.5f;
  SamplerRng rng(0);
  // id 0 appeared twice in the output: 3.0 - 2*1.0 - 0.5 = 0.5 < 1.0 of id 1.
  const std::vector<int32_t> out = {0, 0};
  EXPECT_EQ(draw({3.0f, 1.0f}, p, rng, {.prompt = {}, .output = out}), 1);
  // Repetition penalty divides positive logits of seen tokens (prompt included) and multiplies negative ones.
  SamplingParams r;
  r.temperature = 0;
  r.repetition_penalty = 2.0f;
  const std::vector<int32_t> prompt = {0};
  EXPECT_EQ(draw({3.0f, 2.0f}, r, rng, {.prompt = prompt, .output = {}}), 1);  // 1.5 < 2.0
  SamplingParams b;
  b.temperature = 0;
  b.logit_bias = {{2, 100.0f}};
  EXPECT_EQ(draw({3.0f, 2.0f, -50.0f}, b, rng), 2);
}

// pick_token sorts the candidates only as far as a draw reads them; a plain reference sorts the whole row first
// (the rules as sampling.h states them: normaliser in id order, or over the top-k in sorted order when top-k cuts).
int32_t pick_by_full_sort(const std::vector<float>& logits, const SamplingParams& p, double u) {
  std::vector<std::pair<float, int32_t>> c;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] > -INFINITY) c.emplace_back(logits[i], static_cast<int32_t>(i));
  }
  double max_logit = -INFINITY;
  for (const auto& e : c) max_logit = std::max(max_logit, static_cast<double>(e.first));
  auto prob = [&](float l) { return std::exp((static_cast<double>(l) - max_logit) / p.temperature); };
  double total = 0;
  for (const auto& e : c) total += prob(e.first);  // id order
  std::stable_sort(c.begin(), c.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < c.size()) {
    c.resize(static_cast<size_t>(p.top_k));
    total = 0;
    for (const auto& e : c) total += prob(e.first);  // sorted order
  }
  size_t keep = c.size();
  if (p.top_p < 1.0f) {
    double mass = 0;
    for (size_t i = 0; i < c.size(); ++i) {
      if ((mass += prob(c[i].first) / total) >= p.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  if (p.min_p > 0.0f) {
    size_t m = 1;
    while (m < keep && prob(c[m].first) >= p.min_p * prob(c[0].first)) ++m;
    keep = m;
  }
  double kept = total;
  if (keep < c.size()) {
    kept = 0;
    for (size_t i = 0; i < keep; ++i) kept += prob(c[i].first);
  }
  double t = u * kept;
  for (size_t i = 0; i < keep; ++i) {
    if ((t -= prob(c[i].first)) < 0) return c[i].second;
  }
  return c[keep - 1].second;
}

TEST(Sampling, PickTokenEqualsAWholeRowSortForEveryFilter) {
  SamplerRng gen(7);
  std::vector<float> logits(20000);
  for (size_t i = 0; i < logits.size(); ++i) {
    // Rows from flat to peaked, with ties (rounded logits) and masked (-inf) entries.
    logits[i] = std::round(static_cast<float>(gen.uniform() * 8.0) * 64.0f) / 64.0f;
    if (i % 17 == 0) logits[i] = -INFINITY;
  }
  SamplerScratch scratch;
  int n_checked = 0;
  for (float temperature : {0.25f, 1.0f, 3.0f}) {
    for (int32_t top_k : {0, 5, 1000}) {
      for (float top_p : {1.0f, 0.9f, 0.3f}) {
        for (float min_p : {0.0f, 0.05f}) {
          SamplingParams p;
          p.temperature = temperature, p.top_k = top_k, p.top_p = top_p, p.min_p = min_p;
          for (double u : {0.0, 0.001, 0.37, 0.5, 0.93, 0.999999}) {
            EXPECT_EQ(pick_token(logits, p, u, scratch), pick_by_full_sort(logits, p, u))
                << "T " << temperature << " top_k " << top_k << " top_p " << top_p << " min_p " << min_p << " u " << u;
            ++n_checked;
          }
        }
      }
    }
  }
  EXPECT_EQ(n_checked, 3 * 3 * 3 * 2 * 6);
}

TEST(Sampling, TheSameSeedGivesTheSameTokens) {
  const std::vector<float> logits = {0.3f, 0.1f, 0.2f, 0.4f, 0.0f, 0.25f};
  SamplingParams p;
  SamplerRng a(42), b(42), c(43);
  std::vector<int32_t> xa, xb, xc;
  for (int i = 0; i < 64; ++i) {
    xa.push_back(draw(logits, p, a));
    xb.push_back(draw(logits, p, b));
    xc.push_back(draw(logits, p, c));
  }
  EXPECT_EQ(xa, xb);
  EXPECT_NE(xa, xc);
}

TEST(Sampling, OutOfRangeParametersAreRejectedByName) {
  auto rejects = [](SamplingParams p, const std::string& field) {
    try {
      p.validate(10);
    } catch (const InvalidRequest& e) {
      return std::string(e.what()).rfind(field, 0) == 0;
    }
    return false;
  };
  SamplingParams p;
  EXPECT_NO_THROW(p.validate(10));
  p.temperature = -1;
  EXPECT_TRUE(rejects(p, "temperature"));
  p = {};
  p.top_p = 0;
  EXPECT_TRUE(rejects(p, "top_p"));
  p = {};
  p.min_p = 1.5f;
  EXPECT_TRUE(rejects(p, "min_p"));
  p = {};
  p.logit_bias = {{10, 1.0f}};
  EXPECT_TRUE(rejects(p, "logit_bias"));
  p = {};
  p.repetition_penalty = 0;
  EXPECT_TRUE(rejects(p, "repetition_penalty"));
  p = {};
  p.temperature = NAN;
  EXPECT_TRUE(rejects(p, "temperature"));
}

}  // namespace
}  // namespace quatre::engine
