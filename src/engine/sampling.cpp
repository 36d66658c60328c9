// Host sampling: the filters in a fixed, documented order and a per-request random stream.
#include "engine/sampling.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <unordered_map>

#include <fmt/format.h>

#include "core/check.h"
#include "core/error.h"

namespace quatre::engine {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

bool by_logit(const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
  return a.first != b.first ? a.first > b.first : a.second < b.second;
}

// pick_token's rules over the candidates in sorted order: prob(i) is the i-th one's probability at the
// temperature (unnormalised, i < n), total the sum of all n; top-p, min-p, then the draw u in [0, 1). Reads the
// candidates in order and no further than the cuts and the draw need. Returns the index of the candidate drawn.
template <class Prob>
size_t draw_index(Prob&& prob, size_t n, double total, const SamplingParams& p, double u) {
  // top-p: the smallest prefix whose mass reaches top_p (at least one token).
  size_t keep = n;
  if (p.top_p < 1.0f) {
    double mass = 0;
    for (size_t i = 0; i < n; ++i) {
      mass += prob(i) / total;
      if (mass >= p.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  // min-p: drop tokens below min_p times the most likely one's probability.
  if (p.min_p > 0.0f) {
    const double floor = p.min_p * prob(0);
    size_t m = 1;
    while (m < keep && prob(m) >= floor) ++m;
    keep = m;
  }
  double kept = total;
  if (keep < n) {
    kept = 0;
    for (size_t i = 0; i < keep; ++i) kept += prob(i);
  }
  double t = u * kept;
  for (size_t i = 0; i < keep; ++i) {
    t -= prob(i);
    if (t < 0) return i;
  }
  return keep - 1;
}

size_t draw_index(std::span<const double> probs, double total, const SamplingParams& p, double u) {
  return draw_index([&](size_t i) { return probs[i]; }, probs.size(), total, p, u);
}

// The candidates (logit, id) in by_logit order, sorted on demand: [0, sorted_) is the sorted prefix, the rest
// is unordered but after it. A draw mostly stops within the first few hundred of 131072 candidates, so the row
// is not sorted whole. probs_ caches the probabilities at the temperature of the prefix read so far.
class LazySorted {
 public:
  LazySorted(std::vector<std::pair<float, int32_t>>& c, std::vector<double>& probs, size_t sorted, double temperature)
      : c_(c), probs_(probs), sorted_(sorted), temperature_(temperature) {
    probs_.clear();
  }
  double prob(size_t i) {
    while (probs_.size() <= i) {
      if (probs_.size() >= sorted_) grow(probs_.size() + 1);
      const double max_logit = c_.front().first;
      probs_.push_back(std::exp((static_cast<double>(c_[probs_.size()].first) - max_logit) / temperature_));
    }
    return probs_[i];
  }
  int32_t id(size_t i) {
    if (i >= sorted_) grow(i + 1);
    return c_[i].second;
  }

 private:
  void grow(size_t n) {  // at least doubles the prefix: O(V) work a step, few steps
    n = std::min(c_.size(), std::max(n, 2 * sorted_ + 256));
    const auto first = c_.begin() + static_cast<std::ptrdiff_t>(sorted_), nth = c_.begin() + static_cast<std::ptrdiff_t>(n);
    if (nth != c_.end()) std::nth_element(first, nth, c_.end(), by_logit);
    std::sort(first, nth, by_logit);
    sorted_ = n;
  }

  std::vector<std::pair<float, int32_t>>& c_;
  std::vector<double>& probs_;
  size_t sorted_;
  double temperature_;
};

int32_t argmax(std::span<const float> logits) {
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[static_cast<size_t>(best)]) best = static_cast<int32_t>(i);
  }
  return best;
}

}  // namespace

void apply_penalties(std::span<float> logits, const SamplingParams& p, const TokenHistory& h) {
  const int32_t vocab = static_cast<int32_t>(logits.size());
  if (p.repetition_penalty != 1.0f) {
    auto penalise = [&](int32_t id) {
      if (id < 0 || id >= vocab) return;
      float& l = logits[static_cast<size_t>(id)];
      l = l > 0 ? l / p.repetition_penalty : l * p.repetition_penalty;
    };
    // Each distinct token once, whether it appears in the prompt, the output or both.
    std::vector<int32_t> seen(h.prompt.begin(), h.prompt.end());
    seen.insert(seen.end(), h.output.begin(), h.output.end());
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    for (int32_t id : seen) penalise(id);
  }
  if (p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) {
    std::unordered_map<int32_t, int> counts;
    for (int32_t id : h.output) ++counts[id];
    for (const auto& [id, n] : counts) {
      if (id < 0 || id >= vocab) continue;
      logits[static_cast<size_t>(id)] -= p.frequency_penalty * static_cast<float>(n) + p.presence_penalty;
    }
  }
  for (const auto& [id, bias] : p.logit_bias) logits[static_cast<size_t>(id)] += bias;
}

void SamplingParams::validate(int32_t vocab_size) const {
  auto fail = [](const char* field, const std::string& what) { throw InvalidRequest(fmt::format("{}: {}", field, what)); };
  if (!std::isfinite(temperature) || temperature < 0) fail("temperature", fmt::format("must be >= 0, got {}", temperature));
  if (!std::isfinite(top_p) || top_p <= 0 || top_p > 1) fail("top_p", fmt::format("must be in (0, 1], got {}", top_p));
  if (!std::isfinite(min_p) || min_p < 0 || min_p > 1) fail("min_p", fmt::format("must be in [0, 1], got {}", min_p));
  if (!std::isfinite(presence_penalty) || presence_penalty < -2 || presence_penalty > 2) {
    fail("presence_penalty", fmt::format("must be in [-2, 2], got {}", presence_penalty));
  }
  if (!std::isfinite(frequency_penalty) || frequency_penalty < -2 || frequency_penalty > 2) {
    fail("frequency_penalty", fmt::format("must be in [-2, 2], got {}", frequency_penalty));
  }
  if (!std::isfinite(repetition_penalty) || repetition_penalty <= 0) {
    fail("repetition_penalty", fmt::format("must be > 0, got {}", repetition_penalty));
  }
  for (const auto& [id, bias] : logit_bias) {
    if (id < 0 || id >= vocab_size) fail("logit_bias", fmt::format("token id {} is outside the vocabulary of {}", id, vocab_size));
    if (!std::isfinite(bias) || bias < -100 || bias > 100) fail("logit_bias", fmt::format("bias {} for id {} must be in [-100, 100]", bias, id));
  }
}

int32_t sample_token(std::span<float> logits, const SamplingParams& p, const TokenHistory& history, SamplerRng& rng,
                     SamplerScratch& s) {
  apply_penalties(logits, p, history);
  return pick_token(logits, p, rng, s);
}

bool draws_uniform(const SamplingParams& p, int32_t n_finite) { return p.temperature != 0.0f && n_finite > 0; }

int32_t pick_token(std::span<const float> logits, const SamplingParams& p, SamplerRng& rng, SamplerScratch& s) {
  const bool any_finite = std::any_of(logits.begin(), logits.end(), [](float l) { return l > kNegInf; });
  return pick_token(logits, p, draws_uniform(p, any_finite ? 1 : 0) ? rng.uniform() : 0.0, s);
}

int32_t pick_token(std::span<const float> logits, const SamplingParams& p, double u, SamplerScratch& s) {
  std::vector<std::pair<float, int32_t>>& scratch = s.candidates;
  std::vector<double>& probs = s.probs;
  if (p.temperature == 0.0f) return argmax(logits);

  // Candidates by logit (descending, lower id first on ties), cut by top-k: sorted whole when top-k cuts them,
  // else on demand.
  scratch.clear();
  for (size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] > kNegInf) scratch.emplace_back(logits[i], static_cast<int32_t>(i));
  }
  if (scratch.empty()) return argmax(logits);
  const bool cut = p.top_k > 0 && static_cast<size_t>(p.top_k) < scratch.size();
  float max_logit = scratch.front().first;
  for (const auto& [l, id] : scratch) max_logit = std::max(max_logit, l);
  if (cut) {
    const auto k = static_cast<std::ptrdiff_t>(p.top_k);
    std::partial_sort(scratch.begin(), scratch.begin() + k, scratch.end(), by_logit);
    scratch.resize(static_cast<size_t>(k));
  }
  // Softmax at the temperature, in double; the normaliser summed in id order (sorted order when cut by top-k).
  double total = 0;
  for (const auto& [l, id] : scratch) total += std::exp((static_cast<double>(l) - max_logit) / p.temperature);
  LazySorted sorted(scratch, probs, cut ? scratch.size() : 0, p.temperature);
  return sorted.id(draw_index([&](size_t i) { return sorted.prob(i); }, scratch.size(), total, p, u));
}

void penalty_edits(const SamplingParams& p, const TokenHistory& h, int32_t row, int32_t vocab, std::vector<LogitEdit>& out) {
  const size_t first = out.size();
  const bool repeat = p.repetition_penalty != 1.0f, count = p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f;
  if (repeat || count) {
    // Distinct ids of the history (prompt and output: the repetition penalty) and the output counts.
    std::vector<int32_t> seen(repeat ? h.prompt.begin() : h.prompt.end(), h.prompt.end());
    seen.insert(seen.end(), h.output.begin(), h.output.end());
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    std::vector<int32_t> output(h.output.begin(), h.output.end());
    std::sort(output.begin(), output.end());
    size_t o = 0;
    for (int32_t id : seen) {
      if (id < 0 || id >= vocab) continue;
      while (o < output.size() && output[o] < id) ++o;
      int n = 0;
      while (o < output.size() && output[o] == id) ++n, ++o;
      // apply_penalties: l = rep(l), then l -= frequency * n + presence (l + -x is l - x exactly).
      const float add = count && n > 0 ? -(p.frequency_penalty * static_cast<float>(n) + p.presence_penalty) : 0.0f;
      if (!repeat && n == 0) continue;
      out.push_back({.row = row, .id = id, .rep = repeat ? p.repetition_penalty : 1.0f, .add = add});
    }
  }
  for (const auto& [id, bias] : p.logit_bias) out.push_back({.row = row, .id = id, .rep = 1.0f, .add = bias});
  std::stable_sort(out.begin() + static_cast<std::ptrdiff_t>(first), out.end(),
                   [](const LogitEdit& a, const LogitEdit& b) { return a.id < b.id; });
}

std::optional<int32_t> pick_from_summary(const LogitsSummary::Row& row, const SamplingParams& p, double u) {
  const size_t n = row.ids.size();
  if (n == 0 || !std::isfinite(row.stats.max_logit)) return std::nullopt;
  if (p.temperature == 0.0f) return row.ids[0];
  const auto n_finite = static_cast<size_t>(row.stats.n_finite);
  const size_t k = p.top_k > 0 ? std::min(n_finite, static_cast<size_t>(p.top_k)) : n_finite;  // pick_token's candidates
  std::array<double, kMaxSummaryK> prob_store;
  const std::span<double> probs(prob_store.data(), std::min(n, k));
  const double max_logit = row.logits[0];
  for (size_t i = 0; i < probs.size(); ++i) probs[i] = std::exp((static_cast<double>(row.logits[i]) - max_logit) / p.temperature);
  if (k <= n) {  // every candidate is in the summary: pick_token's arithmetic exactly
    double total = 0;
    for (double q : probs) total += q;
    return row.ids[draw_index(probs, total, p, u)];
  }
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < n_finite) return std::nullopt;  // Σ over the top_k unknown
  // The normaliser over the whole row comes from the backend; pick_token's cuts must end inside the candidates.
  constexpr double kMargin = 1e-9;
  const double total = row.stats.sum_exp;
  if (!(total > 0) || !std::isfinite(total)) return std::nullopt;
  size_t keep = k;  // > n: beyond the candidates
  if (p.top_p < 1.0f) {
    double mass = 0;
    for (size_t i = 0; i < n && keep == k; ++i) {
      const double before = mass;
      mass += probs[i] / total;
      if (mass >= p.top_p) {
        if (mass - p.top_p < kMargin || p.top_p - before < kMargin) return std::nullopt;
        keep = i + 1;
      }
    }
    if (keep == k && p.top_p - mass < kMargin) return std::nullopt;
  }
  if (p.min_p > 0.0f) {
    const double floor = p.min_p * probs[0];
    size_t m = 1;
    while (m < std::min(keep, n) && probs[m] >= floor) ++m;
    if (m == n && keep > n) return std::nullopt;  // the cut lies past the candidates
    keep = std::min(keep, m);
  }
  if (keep <= n) {
    double kept = 0;
    for (size_t i = 0; i < keep; ++i) kept += probs[i];
    double t = u * kept;
    for (size_t i = 0; i < keep; ++i) {
      t -= probs[i];
      if (t < 0) return row.ids[i];
    }
    return row.ids[keep - 1];
  }
  // A top-p prefix that ends past the candidates: its mass, the draw's scale, is unknown.
  if (p.top_p < 1.0f) return std::nullopt;
  // Nothing cut: the draw over the whole row must land inside the candidates, clear of the normaliser's last bits.
  double t = u * total;
  for (size_t i = 0; i < n; ++i) {
    if (t < kMargin * total) return std::nullopt;
    t -= probs[i];
    if (t < 0) return t < -kMargin * total ? std::optional<int32_t>(row.ids[i]) : std::nullopt;
  }
  return std::nullopt;
}

LogSoftmax log_softmax(std::span<const float> logits) {
  LogSoftmax r;
  r.max_logit = -std::numeric_limits<double>::infinity();
  for (float l : logits) r.max_logit = std::max(r.max_logit, static_cast<double>(l));
  CHECK(std::isfinite(r.max_logit)) << "log_softmax over " << logits.size() << " logits with no finite one";
  double sum = 0;
  for (float l : logits) sum += std::exp(static_cast<double>(l) - r.max_logit);  // exp(-inf) = 0
  r.log_sum = std::log(sum);
  return r;
}

std::vector<int32_t> top_ids(std::span<const float> logits, int32_t k) {
  std::vector<std::pair<float, int32_t>> c;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] > kNegInf) c.emplace_back(logits[i], static_cast<int32_t>(i));
  }
  const size_t n = std::min(c.size(), static_cast<size_t>(std::max(k, 0)));
  std::partial_sort(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(n), c.end(),
                    [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
  std::vector<int32_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = c[i].second;
  return ids;
}

}  // namespace quatre::engine
