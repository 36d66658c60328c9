// model/rope: the YaRN inv_freq table of the real config against MODEL.md §4.1 (float64 values, 1e-6 relative),
// the correction ranges of the tiny presets (§8.1), the cos/sin factor, the Llama-4 temperature (§3.6) and the two
// softmax-scale conventions (§4.3).
#include <algorithm>
#include <cmath>

#include <gtest/gtest.h>

#include "core/error.h"
#include "io/model_config.h"
#include "model/rope.h"

namespace quatre::model {
namespace {

// MODEL.md §4.1, float64.
constexpr double kRealInvFreq[32] = {
    1.000000000e+00, 7.498942093e-01, 5.623413252e-01, 4.216965034e-01, 3.162277660e-01, 2.371373706e-01,
    1.778279410e-01, 1.333521432e-01, 1.000000000e-01, 7.498942093e-02, 5.623413252e-02, 4.216965034e-02,
    3.162277660e-02, 2.190385448e-02, 1.506835317e-02, 1.028189902e-02, 6.947115385e-03, 4.637266475e-03,
    3.048268482e-03, 1.964031191e-03, 1.231463897e-03, 7.424793874e-04, 4.210589468e-04, 2.139724894e-04,
    8.413461538e-05, 5.858548510e-06, 4.393291603e-06, 3.294503933e-06, 2.470529422e-06, 1.852635708e-06,
    1.389280789e-06, 1.041813619e-06};

TEST(Rope, RealConfigInvFreqMatchesTheSpecTable) {
  const io::TextConfig t = io::preset("mistral-small-4").text;
  const std::vector<float> f = rope_inv_freq(t);
  ASSERT_EQ(f.size(), 32u);
  for (size_t i = 0; i < f.size(); ++i) {
    EXPECT_NEAR(f[i] / kRealInvFreq[i], 1.0, 1e-6) << "lane " << i << ": " << f[i] << " vs " << kRealInvFreq[i];
  }
  const YarnRange r = yarn_correction_range(t);
  EXPECT_EQ(r.low, 12);
  EXPECT_EQ(r.high, 25);
}

TEST(Rope, TinyPresetsCorrectionRanges) {
  // MODEL.md §8.1: dim 32, L0 64, factor 16, beta_fast 4 -> low 1, high 5: lanes 0-1 kept, 2-4 blended, 5-15 / 16.
  const io::TextConfig tiny = io::preset("tiny").text;
  const YarnRange r = yarn_correction_range(tiny);
  EXPECT_EQ(r.low, 1);
  EXPECT_EQ(r.high, 5);
  const std::vector<float> f = rope_inv_freq(tiny);
  ASSERT_EQ(f.size(), 16u);
  for (int i = 0; i < 16; ++i) {
    const double extrap = std::pow(10000.0, -2.0 * i / 32.0);
    const double ramp = std::clamp((i - 1.0) / 4.0, 0.0, 1.0);
    const double want = extrap / 16 * ramp + extrap * (1 - ramp);
    EXPECT_NEAR(f[static_cast<size_t>(i)] / want, 1.0, 1e-6) << "lane " << i;
  }
  EXPECT_FLOAT_EQ(f[0], 1.0f);
  EXPECT_NEAR(f[15], std::pow(10000.0, -30.0 / 32.0) / 16, 1e-12);
  // beta_fast 32 (tiny-yarn32): corr(32) = 32 ln(64 / 64π) / (2 ln 1e4) < 0, so low clamps to 0.
  EXPECT_EQ(yarn_correction_range(io::preset("tiny-yarn32").text).low, 0);
}

TEST(Rope, CosSinFactorIsOneAndOtherwiseRejected) {
  io::TextConfig t = io::preset("mistral-small-4").text;
  EXPECT_DOUBLE_EQ(yarn_attention_factor(t.rope), 1.0);
  EXPECT_NO_THROW(check_rope_supported(t));
  t.rope.mscale = 0.5;
  EXPECT_NE(yarn_attention_factor(t.rope), 1.0);
  EXPECT_THROW(check_rope_supported(t), LoadError);
  t.rope.mscale = 0;  // without both mscales transformers uses 0.1 ln(factor) + 1 = 1.485
  EXPECT_NEAR(yarn_attention_factor(t.rope), 0.1 * std::log(128.0) + 1, 1e-12);
}

TEST(Rope, Llama4TemperatureValuesOfTheSpec) {
  const io::RopeConfig r = io::preset("mistral-small-4").text.rope;
  const std::pair<int64_t, double> want[] = {{0, 1.0},           {8191, 1.0},         {8192, 1.0693147},
                                             {16384, 1.1098612}, {32768, 1.1609438},  {131072, 1.2833213},
                                             {262143, 1.3465736}};
  for (auto [pos, value] : want) EXPECT_NEAR(llama4_query_temperature(pos, r), value, 1e-6) << "position " << pos;
  io::RopeConfig off = r;
  off.llama_4_scaling_beta = 0;
  EXPECT_EQ(llama4_query_temperature(100000, off), 1.0f);
}

TEST(Rope, SoftmaxScaleConventions) {
  io::TextConfig t = io::preset("mistral-small-4").text;
  EXPECT_NEAR(softmax_scale(t, SoftmaxScale::kRelease), 0.08838834764831845, 1e-8);
  EXPECT_NEAR(softmax_scale(t, SoftmaxScale::kTransformers), 0.08838834764831845 * 2.2058280296038424, 1e-7);
  t.rope.apply_scale = true;  // a params.json that asks for the fold gets it in release mode too
  EXPECT_NEAR(softmax_scale(t, SoftmaxScale::kRelease), 0.1949695, 1e-6);
  t.rope.apply_scale = false;
  EXPECT_NEAR(softmax_scale(t, SoftmaxScale::kTransformers), 0.1949695, 1e-6);
}

}  // namespace
}  // namespace quatre::model
