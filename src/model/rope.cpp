// YaRN frequencies, attention factor, Llama-4 temperature and softmax scale, following transformers 5.17
// (modeling_rope_utils._compute_yarn_parameters, modeling_mistral4) arithmetic step by step. Depends on core, io.
#include "model/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include <fmt/format.h>

#include "core/error.h"

namespace quatre::model {
namespace {

// dim·ln(L0/(2π·rotations)) / (2·ln theta): the rope lane whose wavelength fits `rotations` times in L0.
double correction_dim(double rotations, double dim, double theta, double original_max) {
  return dim * std::log(original_max / (rotations * 2.0 * std::numbers::pi)) / (2.0 * std::log(theta));
}

}  // namespace

YarnRange yarn_correction_range(const io::TextConfig& text) {
  const io::RopeConfig& r = text.rope;
  const double dim = static_cast<double>(text.qk_rope_head_dim);
  const double L0 = static_cast<double>(r.original_max_position_embeddings);
  // transformers' `beta_fast or 32`, `beta_slow or 1`; truncate defaults to true.
  const double beta_fast = r.beta_fast != 0 ? r.beta_fast : 32.0;
  const double beta_slow = r.beta_slow != 0 ? r.beta_slow : 1.0;
  double low = std::floor(correction_dim(beta_fast, dim, r.theta, L0));
  double high = std::ceil(correction_dim(beta_slow, dim, r.theta, L0));
  low = std::max(low, 0.0);
  high = std::min(high, dim - 1);
  if (low == high) high += 0.001;  // transformers' guard against a zero-width ramp
  return {low, high};
}

std::vector<float> rope_inv_freq(const io::TextConfig& text) {
  // transformers derives dim as int(head_dim * partial_rotary_factor), which is qk_rope_head_dim for every
  // Mistral Small 4 config (and both tiny presets); we use qk_rope_head_dim directly.
  const int64_t dim = text.qk_rope_head_dim;
  const io::RopeConfig& r = text.rope;
  const auto theta = static_cast<float>(r.theta);
  std::vector<float> inv_freq(static_cast<size_t>(dim / 2));
  const YarnRange range = r.is_yarn ? yarn_correction_range(text) : YarnRange{};
  for (int64_t i = 0; i < dim / 2; ++i) {
    // pos_freqs = theta ** (arange(0, dim, 2).float() / dim), all fp32.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
    const float pos_freq = std::pow(theta, exponent);
    const float extrapolation = 1.0f / pos_freq;
    if (!r.is_yarn) {
      inv_freq[static_cast<size_t>(i)] = extrapolation;
      continue;
    }
    const float interpolation = 1.0f / (static_cast<float>(r.factor) * pos_freq);
    // linear_ramp_factor: clamp((i - low) / (high - low), 0, 1) in fp32, with (high - low) a Python scalar;
    // the "extrapolation factor" is 1 - ramp.
    const float ramp = std::clamp((static_cast<float>(i) - static_cast<float>(range.low)) /
                                      static_cast<float>(range.high - range.low),
                                  0.0f, 1.0f);
    const float extrapolation_factor = 1.0f - ramp;
    inv_freq[static_cast<size_t>(i)] =
        interpolation * (1.0f - extrapolation_factor) + extrapolation * extrapolation_factor;
  }
  return inv_freq;
}

double yarn_get_mscale(double factor, double m) { return factor <= 1 ? 1.0 : 0.1 * m * std::log(factor) + 1.0; }

double yarn_attention_factor(const io::RopeConfig& rope) {
  if (!rope.is_yarn) return 1.0;
  if (rope.mscale != 0 && rope.mscale_all_dim != 0) {
    return yarn_get_mscale(rope.factor, rope.mscale) / yarn_get_mscale(rope.factor, rope.mscale_all_dim);
  }
  return yarn_get_mscale(rope.factor, 1.0);
}

void check_rope_supported(const io::TextConfig& text) {
  const double factor = yarn_attention_factor(text.rope);
  if (std::abs(factor - 1.0) > 1e-12) {
    throw LoadError(fmt::format(
        "YaRN cos/sin attention factor is {} (factor={}, mscale={}, mscale_all_dim={}), expected 1: every Mistral "
        "Small 4 config sets mscale == mscale_all_dim (MODEL.md §4.2), and this engine does not scale cos/sin",
        factor, text.rope.factor, text.rope.mscale, text.rope.mscale_all_dim));
  }
  if (text.qk_rope_head_dim % 2 != 0) {
    throw LoadError(fmt::format("qk_rope_head_dim={} is odd; interleaved RoPE needs pairs", text.qk_rope_head_dim));
  }
}

float llama4_query_temperature(int64_t position, const io::RopeConfig& rope) {
  if (rope.llama_4_scaling_beta == 0) return 1.0f;
  // torch: positions / original_max is a float32 true division, then floor, log and the affine map in fp32.
  const float ratio =
      static_cast<float>(position) / static_cast<float>(rope.llama_4_original_max_position_embeddings);
  return 1.0f + static_cast<float>(rope.llama_4_scaling_beta) * std::log(1.0f + std::floor(ratio));
}

float softmax_scale(const io::TextConfig& text, SoftmaxScale convention) {
  // Python float arithmetic (double), handed to torch as a scalar that multiplies fp32 scores.
  double scale = 1.0 / std::sqrt(static_cast<double>(text.qk_head_dim()));
  const io::RopeConfig& r = text.rope;
  const bool fold = convention == SoftmaxScale::kTransformers || r.apply_scale.value_or(false);
  if (fold && r.is_yarn && r.mscale_all_dim != 0) {
    const double m = yarn_get_mscale(r.factor, r.mscale_all_dim);
    scale = scale * m * m;
  }
  return static_cast<float>(scale);
}

}  // namespace quatre::model
