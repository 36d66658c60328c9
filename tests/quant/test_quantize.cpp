// quantize_checkpoint on the tiny synthetic checkpoints (both formats, BF16 and FP8 input): every 4-bit weight is
// the round-to-nearest quantisation of the input's value (within half a step), every other FP8 weight of an FP8
// input is the input's bytes with its weight and activation scales (or, with keep_fp8 off, its value in BF16),
// every other weight the input's value in BF16 (bit-exact from BF16), the HF and native outputs of one seed hold
// the same codes, the loader and the CPU forward run it, and the logits of the 4-bit model stay within a measured
// bound of the input model's. Bad options and inconsistent files are clear errors.
#include <cmath>
#include <cstring>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "core/error.h"
#include "model_test_util.h"
#include "quant/quantize.h"

namespace quatre::quant {
namespace {

namespace fs = std::filesystem;
using model::test::TempDir;

QuantizeOptions options(int64_t group_size, io::Int4Modules modules = io::Int4Modules::kExperts, bool is_symmetric = true) {
  QuantizeOptions o;
  o.int4 = {.group_size = group_size, .is_symmetric = is_symmetric, .modules = modules};
  return o;
}

// Each 4-bit weight element within half a quantisation step (+ the BF16 rounding of scale and offset) of the input's
// value; every other FP8 weight, when the output keeps FP8 (others_fp8), the input's bytes and scales; every other
// weight equal to the input's value rounded to BF16. Returns the number of FP8 weights kept.
int64_t expect_faithful(const io::Checkpoint& in, const io::Checkpoint& out) {
  const io::ModelConfig& c = out.config();
  EXPECT_EQ(c.quantization, io::WeightQuantization::kInt4);
  int64_t n_int4 = 0, n_fp8 = 0;
  for (const auto& [key, v] : out.weights()) {
    const io::WeightView& src = in.weight(key);
    EXPECT_EQ(v.is_int4(), io::is_int4_weight(c, key.kind)) << io::weight_key_name(key);
    if (!v.is_int4() && c.int4.others_fp8 && src.dtype == DType::F8_E4M3) {
      EXPECT_EQ(v.dtype, DType::F8_E4M3) << io::weight_key_name(key);
      EXPECT_TRUE(std::equal(v.bytes.begin(), v.bytes.end(), src.bytes.begin(), src.bytes.end())) << io::weight_key_name(key);
      EXPECT_EQ(v.weight_scale, src.weight_scale) << io::weight_key_name(key);
      EXPECT_EQ(v.activation_scale, src.activation_scale) << io::weight_key_name(key);
      ++n_fp8;
      continue;
    }
    const int64_t n = static_cast<int64_t>(v.bytes.size()) * (v.is_int4() ? 2 : 1) / (v.is_int4() ? 1 : 2);
    if (!v.is_int4()) {
      EXPECT_EQ(v.dtype, DType::BF16) << io::weight_key_name(key);
      if (v.dtype != DType::BF16) continue;
      for (int64_t i = 0; i < n; ++i) {
        if (v.at(static_cast<size_t>(i)) != bf16_to_f32(f32_to_bf16(src.at(static_cast<size_t>(i))))) {
          ADD_FAILURE() << io::weight_key_name(key) << " element " << i;
          break;
        }
      }
      continue;
    }
    ++n_int4;
    const int64_t in_cols = v.shape[1], G = v.int4_group_size;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t group = (i / in_cols) * (in_cols / G) + (i % in_cols) / G;
      uint16_t scale_bits = 0;
      std::memcpy(&scale_bits, v.int4_scales.data() + 2 * group, 2);
      const float s = bf16_to_f32(scale_bits), want = src.at(static_cast<size_t>(i));
      const float bound = 0.5f * s + 0.008f * (std::fabs(want) + (v.int4_offsets.empty() ? 0.0f : 15.0f * s));
      if (std::fabs(v.at(static_cast<size_t>(i)) - want) > bound) {
        ADD_FAILURE() << io::weight_key_name(key) << " element " << i << ": " << v.at(static_cast<size_t>(i)) << " for " << want;
        break;
      }
    }
  }
  EXPECT_GT(n_int4, 0);
  return n_fp8;
}

template <typename E>
void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning " << needle;
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// Relative L2 error of the 4-bit model's logits against the input model's on one prompt.
double logits_rel_l2(const fs::path& reference, const fs::path& quantized) {
  const model::test::LoadedModel a(reference), b(quantized);
  const model::TextModel ma(a.text(), a.weights, *a.backend), mb(b.text(), b.weights, *b.backend);
  const std::vector<int32_t> ids = model::test::random_ids(40, a.text().vocab_size, 3);
  return model::test::diff(model::test::prefill_logits(mb, ids), model::test::prefill_logits(ma, ids)).rel_l2;
}

class QuantizeTiny : public testing::TestWithParam<std::tuple<io::CheckpointFormat, bool>> {};

TEST_P(QuantizeTiny, ExpertsInFourBitsRunAndStayClose) {
  const auto [format, fp8] = GetParam();
  TempDir dir;
  const fs::path src = model::test::make_checkpoint(dir, "src", {.format = format, .fp8 = fp8});
  const QuantizeSummary s = quantize_checkpoint(src, dir.path() / "q", options(32));
  EXPECT_EQ(s.n_int4_weights, 2 * 8 * 3);  // 2 layers x 8 experts x gate, up, down
  const io::Checkpoint in = io::Checkpoint::open(src), out = io::Checkpoint::open(dir.path() / "q");
  EXPECT_EQ(out.format(), format);
  EXPECT_TRUE(fs::exists(dir.path() / "q" / "tekken.json"));
  // FP8 input: the other linears stay FP8 (2 layers x q_a, q_b, kv_a, kv_b, o and the shared expert's 3).
  EXPECT_EQ(out.config().int4.others_fp8, fp8);
  EXPECT_EQ(expect_faithful(in, out), fp8 ? 2 * (5 + 3) : 0);
  // Measured 0.1005-0.1007 in all four cases (seed 7: random weights, whose 4-bit error is ~7% per weight); the
  // bound leaves 1.5x. bench_int4 measures the trained demo model.
  const double err = logits_rel_l2(src, dir.path() / "q");
  EXPECT_LT(err, 0.15) << "logits rel L2 " << err;
  EXPECT_GT(err, 1e-5);  // the weights did change
  std::printf("logits rel L2 of the 4-bit tiny model (%s, %s input): %.5f\n", std::string(io::format_name(format)).c_str(),
              fp8 ? "fp8" : "bf16", err);
}

INSTANTIATE_TEST_SUITE_P(FormatsAndDtypes, QuantizeTiny,
                         testing::Combine(testing::Values(io::CheckpointFormat::kHuggingFace, io::CheckpointFormat::kMistralNative),
                                          testing::Bool()),
                         [](const auto& i) {
                           return std::string(std::get<0>(i.param) == io::CheckpointFormat::kHuggingFace ? "Hf" : "Native") +
                                  (std::get<1>(i.param) ? "Fp8" : "Bf16");
                         });

// keep_fp8 off: an FP8 input's other linears come out BF16 (w · scale rounded), as before FP8 was kept.
TEST(Quantize, UpcastOthersWritesBf16) {
  TempDir dir;
  const fs::path src = model::test::make_checkpoint(dir, "src", {.fp8 = true});
  QuantizeOptions o = options(32);
  o.keep_fp8 = false;
  const QuantizeSummary bf16 = quantize_checkpoint(src, dir.path() / "q", o);
  const QuantizeSummary fp8 = quantize_checkpoint(src, dir.path() / "q8", options(32));
  const io::Checkpoint in = io::Checkpoint::open(src), out = io::Checkpoint::open(dir.path() / "q");
  EXPECT_FALSE(out.config().int4.others_fp8);
  EXPECT_EQ(expect_faithful(in, out), 0);
  EXPECT_LT(fp8.bytes_out, bf16.bytes_out);  // the same values in fewer bytes
}

// The loader holds an int4 config to its "other_linears": FP8 tensors in a "bfloat16" one are refused, by name.
TEST(Quantize, LoaderRefusesFp8OthersTheConfigDoesNotDeclare) {
  TempDir dir;
  const fs::path src = model::test::make_checkpoint(dir, "src", {.fp8 = true});
  const fs::path q = dir.path() / "q";
  quantize_checkpoint(src, q, options(32));
  nlohmann::json config = io::read_json_file(q / "config.json");
  EXPECT_EQ(config["quantization_config"]["other_linears"], "float8_e4m3fn");
  EXPECT_EQ(config["quantization_config"]["activation_scheme"], "static");
  config["quantization_config"]["other_linears"] = "bfloat16";
  std::ofstream(q / "config.json") << config.dump(2);
  expect_error<LoadError>([&] { io::Checkpoint::open(q); }, "says \"other_linears\": \"bfloat16\"");
  config["quantization_config"]["other_linears"] = "float16";
  std::ofstream(q / "config.json") << config.dump(2);
  expect_error<LoadError>([&] { io::Checkpoint::open(q); }, "other_linears");
}

TEST(Quantize, EveryLinearAsymmetric) {
  TempDir dir;
  const fs::path src = model::test::make_checkpoint(dir, "src", {.preset = "tiny-dense"});
  quantize_checkpoint(src, dir.path() / "q", options(16, io::Int4Modules::kAll, false));
  const io::Checkpoint in = io::Checkpoint::open(src), out = io::Checkpoint::open(dir.path() / "q");
  EXPECT_FALSE(out.config().int4.is_symmetric);
  EXPECT_TRUE(out.weight({io::WeightKind::kQB, 0}).is_int4());
  EXPECT_TRUE(out.weight({io::WeightKind::kDenseDown, 0}).is_int4());
  EXPECT_FALSE(out.weight({io::WeightKind::kRouter, 1}).is_int4());
  EXPECT_FALSE(out.weight({io::WeightKind::kEmbed}).is_int4());
  EXPECT_FALSE(out.weight({io::WeightKind::kAttnNorm, 0}).is_int4());
  expect_faithful(in, out);
  const double err = logits_rel_l2(src, dir.path() / "q");
  EXPECT_LT(err, 0.23) << "logits rel L2 " << err;  // measured 0.152: attention in 4 bits too
}

TEST(Quantize, HfAndNativeHoldTheSameCodes) {
  TempDir dir;
  const fs::path hf = model::test::make_checkpoint(dir, "hf", {.format = io::CheckpointFormat::kHuggingFace});
  const fs::path native = model::test::make_checkpoint(dir, "native", {.format = io::CheckpointFormat::kMistralNative});
  quantize_checkpoint(hf, dir.path() / "qh", options(32));
  quantize_checkpoint(native, dir.path() / "qn", options(32));
  const io::Checkpoint a = io::Checkpoint::open(dir.path() / "qh"), b = io::Checkpoint::open(dir.path() / "qn");
  for (const auto& [key, v] : a.weights()) {
    if (!v.is_int4()) continue;
    const io::WeightView& w = b.weight(key);
    ASSERT_TRUE(std::equal(v.bytes.begin(), v.bytes.end(), w.bytes.begin(), w.bytes.end())) << io::weight_key_name(key);
    ASSERT_TRUE(std::equal(v.int4_scales.begin(), v.int4_scales.end(), w.int4_scales.begin(), w.int4_scales.end()));
  }
}

TEST(Quantize, ClearErrors) {
  TempDir dir;
  const fs::path src = model::test::make_checkpoint(dir, "src", {});
  // 128 does not divide the tiny hidden size (64).
  expect_error<InvalidRequest>([&] { quantize_checkpoint(src, dir.path() / "a", options(128)); },
                               "128 does not divide hidden_size = 64");
  expect_error<InvalidRequest>([&] { quantize_checkpoint(src, dir.path() / "a", options(6)); }, "does not divide");
  expect_error<InvalidRequest>([&] { quantize_checkpoint(src, dir.path() / "a", options(32, io::Int4Modules::kAll)); },
                               "q_lora_rank = 48");
  expect_error<InvalidRequest>([&] { quantize_checkpoint(src, src, options(32)); }, "is not empty");
  quantize_checkpoint(src, dir.path() / "q", options(32));
  expect_error<InvalidRequest>([&] { quantize_checkpoint(dir.path() / "q", dir.path() / "b", options(32)); }, "already a 4-bit");
  expect_error<LoadError>([&] { quantize_checkpoint(dir.path() / "missing", dir.path() / "c", options(32)); }, "missing");
}

TEST(Quantize, LoaderRefusesScalesThatDisagreeWithTheConfig) {
  TempDir dir;
  const fs::path src = model::test::make_checkpoint(dir, "src", {});
  const fs::path q = dir.path() / "q";
  quantize_checkpoint(src, q, options(32));
  nlohmann::json config = io::read_json_file(q / "config.json");
  config["quantization_config"]["group_size"] = 16;  // the files hold groups of 32
  std::ofstream(q / "config.json") << config.dump(2);
  expect_error<LoadError>([&] { io::Checkpoint::open(q); }, "is BF16 [8, 64, 2], expected BF16 [8, 64, 4] (one value per row and group of 16");
  config["quantization_config"]["group_size"] = 32;
  config["quantization_config"]["modules"] = "everything";
  std::ofstream(q / "config.json") << config.dump(2);
  expect_error<LoadError>([&] { io::Checkpoint::open(q); }, "modules");
  config["quantization_config"]["modules"] = "all";  // attention stored BF16, config says 4-bit
  config["quantization_config"]["group_size"] = 16;
  std::ofstream(q / "config.json") << config.dump(2);
  expect_error<LoadError>([&] { io::Checkpoint::open(q); }, "expected U8 (packed 4-bit codes");
}

}  // namespace
}  // namespace quatre::quant
