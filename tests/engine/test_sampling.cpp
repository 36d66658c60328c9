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
