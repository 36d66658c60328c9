// The CPU forward against transformers 5.17 goldens (tests/data/golden/, made on a GPU host by
// tools/reference/make_goldens.sh from checkpoints that gen-model writes identically here): logits, per-layer
// hidden states and 32-token greedy continuations, for BF16 and FP8 (dequantised: W8A16) checkpoints, both
// softmax-scale conventions, and prompts that cross the YaRN original context and the Llama-4 steps. The
// native-format checkpoint of the same seed holds the same weights, so it must meet the same goldens.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "io/safetensors.h"
#include "model/prompt_run.h"
#include "model_test_util.h"
#include "synth/gen_model.h"

// The backend under test: the CPU here; test_golden_cuda builds this file with QUATRE_GOLDEN_CUDA (label gpu).
#ifdef QUATRE_GOLDEN_CUDA
#include "backend/cuda/kernels.h"
constexpr quatre::Device kGoldenDevice = quatre::Device::kCuda;
#else
constexpr quatre::Device kGoldenDevice = quatre::Device::kCpu;
#endif

namespace quatre::model::test {
namespace {

namespace fs = std::filesystem;

// Tolerances: fp32 on both sides. The goldens agree with a float64 reference to ~3e-6 and the CPU forward
// meets them to 4.2e-6 at most (2026-11-22), on logits of magnitude up to ~5.
constexpr double kLogitMaxAbs = 5e-5;
constexpr double kHiddenMaxAbs = 5e-5;
// Greedy ids are compared up to the first step whose top-1/top-2 margin is below this (a near-tie that
// rounding may flip); every golden so far has margins far above it.
constexpr float kGreedyMinMargin = 1e-3f;

struct GoldenCheckpoint {
  const char* name;  // as tools/reference/make_checkpoints.sh names it
  CheckpointSpec spec;
  bool text_only;
};

// The same list as tools/reference/make_checkpoints.sh.
const GoldenCheckpoint kCheckpoints[] = {
    {"tiny-hf-bf16-s1", {"tiny", io::CheckpointFormat::kHuggingFace, false, 1}, false},
    {"tiny-hf-fp8-s1", {"tiny", io::CheckpointFormat::kHuggingFace, true, 1}, false},
    {"tiny-dense-text-hf-bf16-s2", {"tiny-dense", io::CheckpointFormat::kHuggingFace, false, 2}, true},
    {"tiny-yarn32-hf-bf16-s3", {"tiny-yarn32", io::CheckpointFormat::kHuggingFace, false, 3}, false},
};

fs::path golden_dir() { return fs::path(QUATRE_SOURCE_DIR) / "tests" / "data" / "golden"; }

class Golden : public testing::TestWithParam<std::string> {};

// The names of the golden files in golden_dir() / subdir.
std::vector<std::string> golden_files(const std::string& subdir = "") {
  std::vector<std::string> names;
  for (const fs::path& p : safetensors_in(golden_dir() / subdir)) names.push_back(p.filename().string());
  return names;
}

// A golden file's name as a test name: without ".safetensors", other than letters and digits as '_'.
std::string test_name(const testing::TestParamInfo<std::string>& p) {
  std::string name = p.param.substr(0, p.param.size() - std::string(".safetensors").size());
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

// gen-model still writes the bytes the golden of `meta` came from (its FNV-1a 64 of the checkpoint's files).
void expect_golden_checkpoint(const fs::path& path, const std::map<std::string, std::string>& meta) {
  char hash[17];
  std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(fnv1a64_of_safetensors(path)));
  ASSERT_EQ(hash, meta.at("weights_fnv1a64")) << "gen-model no longer writes the checkpoint the goldens came from";
}

TEST(GoldenFiles, ArePresent) {
  // 4 checkpoints x 3 prompts x 2 softmax-scale modes (tools/reference/README.md).
  EXPECT_EQ(golden_files().size(), 24u) << "regenerate with tools/reference/make_goldens.sh on a GPU host";
}

TEST_P(Golden, MatchesTransformers) {
  if (!is_available(kGoldenDevice)) GTEST_SKIP() << "no " << device_name(kGoldenDevice) << " device present";
  const io::SafetensorsFile golden(golden_dir() / GetParam());
  const std::map<std::string, std::string>& meta = golden.metadata();
  const GoldenCheckpoint* ck = nullptr;
  for (const GoldenCheckpoint& c : kCheckpoints) {
    if (meta.at("checkpoint") == c.name) ck = &c;
  }
  ASSERT_NE(ck, nullptr) << "unknown checkpoint " << meta.at("checkpoint");

  TempDir dir;
  for (io::CheckpointFormat format : {io::CheckpointFormat::kHuggingFace, io::CheckpointFormat::kMistralNative}) {
    CheckpointSpec spec = ck->spec;
    spec.format = format;
    const fs::path path = make_checkpoint(dir, format == io::CheckpointFormat::kHuggingFace ? "hf" : "native", spec);
    if (ck->text_only) {  // make_checkpoint writes the preset as is; the text-only golden has no vision tower
      fs::remove_all(path);
      synth::GenModelOptions o;
      o.config = io::preset(spec.preset);
      o.config.vision.reset();
      o.format = format;
      o.fp8 = spec.fp8;
      o.seed = spec.seed;
      synth::generate_checkpoint(o, path);
    }
    const std::string where = std::string(format == io::CheckpointFormat::kHuggingFace ? "hf" : "native") + " checkpoint";
    if (format == io::CheckpointFormat::kHuggingFace) {
      ASSERT_NO_FATAL_FAILURE(expect_golden_checkpoint(path, meta));
    }

    const LoadedModel loaded(path, kGoldenDevice);
    const SoftmaxScale mode = meta.at("softmax_scale_mode") == "hf" ? SoftmaxScale::kTransformers : SoftmaxScale::kRelease;
    const TextModel model(loaded.text(), loaded.weights, *loaded.backend, {.mla_form = MlaForm::kAbsorbed, .softmax_scale = mode});
    EXPECT_NEAR(model.softmax_scale(), std::stod(meta.at("scaling")), 1e-7) << where;

    const std::vector<int32_t> ids = to_i32(read_tensor<int64_t>(golden, "input_ids"));
    const std::vector<int32_t> positions = to_i32(read_tensor<int64_t>(golden, "positions"));
    const std::vector<int32_t> rows = to_i32(read_tensor<int64_t>(golden, "logit_rows"));
    const std::vector<float> want_hidden = read_tensor<float>(golden, "hidden_states");
    const PromptRun run = run_prompt(model, ids, {.positions = positions, .logit_rows = rows, .capture_hidden = !want_hidden.empty()});
    const Diff d = diff(run.logits, read_tensor<float>(golden, "logits"));
    EXPECT_TRUE(d.same_nonfinite && d.max_abs <= kLogitMaxAbs) << where << " logits: " << describe(d);

    if (!want_hidden.empty()) {  // [L+1, T, D]: embedding, layer outputs, then the final norm of the last
      const size_t per_layer = run.hidden.front().size();
      const size_t n_layers = static_cast<size_t>(loaded.text().n_layers);
      for (size_t l = 0; l <= n_layers; ++l) {
        const std::vector<float>& got = l < n_layers ? run.hidden[l] : run.final_norm;
        const std::vector<float> want(want_hidden.begin() + static_cast<std::ptrdiff_t>(l * per_layer),
                                      want_hidden.begin() + static_cast<std::ptrdiff_t>((l + 1) * per_layer));
        const Diff h = diff(got, want);
        EXPECT_TRUE(h.max_abs <= kHiddenMaxAbs) << where << " hidden_states[" << l << "]: " << describe(h);
      }
      const Diff last = diff(run.hidden[n_layers], read_tensor<float>(golden, "last_layer_output"));
      EXPECT_TRUE(last.max_abs <= kHiddenMaxAbs) << where << " last_layer_output: " << describe(last);
    }

    const std::vector<int64_t> want_greedy = read_tensor<int64_t>(golden, "greedy_ids");
    if (!want_greedy.empty()) {
      const std::vector<float> margins = read_tensor<float>(golden, "greedy_margin");
      ASSERT_EQ(margins.size(), want_greedy.size());
      const std::vector<float> want_logits = read_tensor<float>(golden, "greedy_logits");
      const auto [got, got_logits] = greedy(model, ids, static_cast<int>(want_greedy.size()));
      const size_t vocab = static_cast<size_t>(loaded.text().vocab_size);
      for (size_t k = 0; k < want_greedy.size(); ++k) {
        ASSERT_EQ(got[k], want_greedy[k]) << where << " greedy token " << k;
        if (margins[k] < kGreedyMinMargin) break;  // a near-tie: later tokens may legitimately differ
        if (want_logits.empty()) continue;  // only the p13 goldens keep the logits of every step
        const std::vector<float> want_row(want_logits.begin() + static_cast<std::ptrdiff_t>(k * vocab),
                                          want_logits.begin() + static_cast<std::ptrdiff_t>((k + 1) * vocab));
        const Diff g = diff(got_logits[k], want_row);
        EXPECT_TRUE(g.max_abs <= kLogitMaxAbs) << where << " greedy step " << k << " logits: " << describe(g);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(TransformersGoldens, Golden, testing::ValuesIn(golden_files()), test_name);

// W8A8 (--fp8-activations static, model/text_weights.h) on the FP8 checkpoint against a float64 forward of the same
// rule (tests/data/golden/w8a8/, tools/reference/goldens_w8a8.py: pure Python from MODEL.md §3-§4 and §6.2, each FP8
// linear but kv_b taking fp8(clamp(x / a)) of its input; transformers with the same linears met it to 1.7e-6 on p6
// and p13). W8A8 is chaotic: an input within rounding error of an E4M3 midpoint may round the other way in fp32
// than in float64, and the later quantised linears amplify the flip (0.05-0.45 on the rows it reaches; on p200,
// transformers' fp32 run differed from the float64 one by up to 0.04 in 6 of 29 rows). A flip at token t reaches
// only the tokens from t on (causal attention), so rows, in position order, are compared one by one: the leading
// ones must match closely, up to the first flip, and none may be off by more than the W8A8 effect itself. W8A16 is
// 0.14-1.0 off in every row, the first included.
constexpr double kW8A8RowMaxAbs = 1e-4;     // a row that matches
constexpr double kW8A8FlipMaxAbs = 0.5;     // any row
constexpr double kW8A8LeadingRows = 0.1;    // the fraction of rows (at least one) before the first flip

// Rows of width `width` of got against want (rows in position order): a failure unless the first kW8A8LeadingRows of
// them are within kW8A8RowMaxAbs and all within kW8A8FlipMaxAbs.
testing::AssertionResult w8a8_rows_match(const std::vector<float>& got, const std::vector<float>& want, size_t width) {
  if (got.size() != want.size() || width == 0 || got.size() % width != 0) {
    return testing::AssertionFailure() << got.size() << " values against " << want.size() << " in rows of " << width;
  }
  const size_t rows = got.size() / width;
  size_t matching = 0, leading = 0;
  std::string worst;
  double worst_abs = -1;
  for (size_t r = 0; r < rows; ++r) {
    const auto w = static_cast<int64_t>(width), row = static_cast<int64_t>(r);
    const Diff d = diff(slice_rows(got, w, row, 1), slice_rows(want, w, row, 1));
    if (!d.same_nonfinite) return testing::AssertionFailure() << "row " << r << ": non-finite values differ";
    if (d.max_abs <= kW8A8RowMaxAbs) ++matching;
    if (matching == r + 1) leading = matching;
    if (d.max_abs > worst_abs) worst_abs = d.max_abs, worst = "row " + std::to_string(r) + ": " + describe(d);
  }
  const auto needed = std::max<size_t>(1, static_cast<size_t>(std::ceil(kW8A8LeadingRows * static_cast<double>(rows))));
  const bool ok = leading >= needed && worst_abs <= kW8A8FlipMaxAbs;
  return (ok ? testing::AssertionSuccess() : testing::AssertionFailure())
         << matching << " of " << rows << " rows within " << kW8A8RowMaxAbs << ", the first " << leading
         << " in a row (" << needed << " needed); worst " << worst;
}

TEST(W8A8GoldenFiles, ArePresent) {
  // tiny-hf-fp8-s1 x 3 prompts x 2 softmax-scale modes.
  EXPECT_EQ(golden_files("w8a8").size(), 6u) << "regenerate with tools/reference/goldens_w8a8.py";
}

class W8A8Golden : public testing::TestWithParam<std::string> {};

TEST_P(W8A8Golden, MatchesFloat64Reference) {
  if (!is_available(kGoldenDevice)) GTEST_SKIP() << "no " << device_name(kGoldenDevice) << " device present";
  const io::SafetensorsFile golden(golden_dir() / "w8a8" / GetParam());
  const std::map<std::string, std::string>& meta = golden.metadata();
  ASSERT_EQ(meta.at("dtype_semantics"), "fp8-w8a8-static");
  ASSERT_EQ(meta.at("kv_b"), "w8a16");
  ASSERT_EQ(meta.at("checkpoint"), "tiny-hf-fp8-s1");
  TempDir dir;
  for (io::CheckpointFormat format : {io::CheckpointFormat::kHuggingFace, io::CheckpointFormat::kMistralNative}) {
    const bool hf = format == io::CheckpointFormat::kHuggingFace;
    const fs::path path = make_checkpoint(dir, hf ? "hf" : "native", {"tiny", format, true, 1});
    const std::string where = std::string(hf ? "hf" : "native") + " checkpoint";
    if (hf) {
      ASSERT_NO_FATAL_FAILURE(expect_golden_checkpoint(path, meta));
    }
    const LoadedModel loaded(path, kGoldenDevice, Fp8Activations::kStatic);
    const SoftmaxScale mode = meta.at("softmax_scale_mode") == "hf" ? SoftmaxScale::kTransformers : SoftmaxScale::kRelease;
    const TextModel model(loaded.text(), loaded.weights, *loaded.backend, {.mla_form = MlaForm::kAbsorbed, .softmax_scale = mode});
    const std::vector<int32_t> ids = to_i32(read_tensor<int64_t>(golden, "input_ids"));
    const std::vector<int32_t> positions = to_i32(read_tensor<int64_t>(golden, "positions"));
    const std::vector<int32_t> rows = to_i32(read_tensor<int64_t>(golden, "logit_rows"));
    const std::vector<float> want_hidden = read_tensor<float>(golden, "hidden_states");
    const PromptRun run = run_prompt(model, ids, {.positions = positions, .logit_rows = rows, .capture_hidden = !want_hidden.empty()});
    const size_t vocab = static_cast<size_t>(loaded.text().vocab_size), D = static_cast<size_t>(loaded.text().hidden_size);
    const std::vector<float> want_logits = read_tensor<float>(golden, "logits");
    EXPECT_TRUE(w8a8_rows_match(run.logits, want_logits, vocab)) << where << " logits";
    // Every row, flipped or not, is nearer the W8A8 golden than the W8A16 one (transformers') of the same case (the
    // CPU: 0.39 of the distance at most, on a flipped p200 row; a W8A16 forward is ~0 from it).
    const io::SafetensorsFile w8a16(golden_dir() / GetParam());
    const std::vector<float> other = read_tensor<float>(w8a16, "logits");
    ASSERT_EQ(other.size(), want_logits.size());
    for (int64_t r = 0; r < static_cast<int64_t>(want_logits.size() / vocab); ++r) {
      const auto row = [&](const std::vector<float>& v) { return slice_rows(v, static_cast<int64_t>(vocab), r, 1); };
      const Diff to_w8a8 = diff(row(run.logits), row(want_logits)), to_w8a16 = diff(row(run.logits), row(other));
      EXPECT_LT(to_w8a8.rel_l2, 0.75 * to_w8a16.rel_l2) << where << " logit row " << r << ": " << describe(to_w8a8)
                                                        << " from W8A8, " << describe(to_w8a16) << " from W8A16";
    }
    if (want_hidden.empty()) continue;
    const size_t per_layer = run.hidden.front().size();
    const size_t n_layers = static_cast<size_t>(loaded.text().n_layers);
    for (size_t l = 0; l <= n_layers; ++l) {  // [L+1, T, D]: embedding, layer outputs, then the final norm of the last
      const std::vector<float>& got = l < n_layers ? run.hidden[l] : run.final_norm;
      const std::vector<float> want = slice_rows(want_hidden, static_cast<int64_t>(per_layer), static_cast<int64_t>(l), 1);
      EXPECT_TRUE(w8a8_rows_match(got, want, D)) << where << " hidden_states[" << l << "]";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Float64W8A8Goldens, W8A8Golden, testing::ValuesIn(golden_files("w8a8")), test_name);

// The demo model (assets/demo-model, issue #12): its committed BF16 checkpoint against transformers' greedy
// continuations of raw and chat-rendered prompts (tests/data/golden/demo/, written by tools/demo/train_demo.py on
// the GPU host from the saved files right after training: float32 on the CPU, eager, the release softmax scale).
// Each step stores the id, the top-1/top-2 margin and the logits at that step's top 256 columns plus 256 fixed
// pseudo-random ones (full rows of a 131072-id vocabulary would be 512 KiB each).
constexpr double kDemoLogitMaxAbs = 5e-5;  // fp32 both sides, logits up to ~18: measured 4.8e-6 at most (2026-12-05)

fs::path demo_model_dir() { return fs::path(QUATRE_SOURCE_DIR) / "assets" / "demo-model"; }

TEST(DemoGoldenFiles, ArePresent) {
  // 2 raw + 3 chat prompts (tools/demo/make_prompts.py).
  EXPECT_EQ(golden_files("demo").size(), 5u) << "regenerate with tools/demo/train_demo.py (tools/demo/README.md)";
  EXPECT_TRUE(fs::exists(demo_model_dir() / "model.safetensors"));
}

class DemoGolden : public testing::TestWithParam<std::string> {};

// The demo model's greedy continuation of the golden's prompt with a `kv_dtype` latent cache and the attention's
// operands as `operands` says, against transformers': each step's logits within max_abs, and its token equal, up to
// the first step whose top-1 margin is below min_margin (a near-tie: that token and the later ones may differ).
void expect_demo_greedy(const std::string& file, DType kv_dtype, AttentionOperands operands, double max_abs,
                        float min_margin) {
  const io::SafetensorsFile golden(golden_dir() / "demo" / file);
  const std::map<std::string, std::string>& meta = golden.metadata();
  ASSERT_EQ(meta.at("softmax_scale_mode"), "release");
  const LoadedModel loaded(demo_model_dir(), kGoldenDevice);
  ASSERT_TRUE(loaded.text().tie_word_embeddings) << "the demo model ties lm_head to the embedding";
  ASSERT_EQ(loaded.text().vocab_size, 131072);
  const TextModel model(loaded.text(), loaded.weights, *loaded.backend,
                        {.mla_form = MlaForm::kAbsorbed, .softmax_scale = SoftmaxScale::kRelease, .attention_operands = operands});
  EXPECT_NEAR(model.softmax_scale(), std::stod(meta.at("scaling")), 1e-7);

  const std::vector<int32_t> ids = to_i32(read_tensor<int64_t>(golden, "input_ids"));
  const std::vector<int64_t> want_greedy = read_tensor<int64_t>(golden, "greedy_ids");
  const std::vector<float> margins = read_tensor<float>(golden, "greedy_margin");
  const std::vector<int64_t> cols = read_tensor<int64_t>(golden, "greedy_logit_cols");  // [N, K]
  const std::vector<float> vals = read_tensor<float>(golden, "greedy_logit_vals");      // [N, K]
  ASSERT_FALSE(want_greedy.empty());
  ASSERT_EQ(margins.size(), want_greedy.size());
  ASSERT_EQ(cols.size(), vals.size());
  ASSERT_EQ(cols.size() % want_greedy.size(), 0u);
  const size_t k_cols = cols.size() / want_greedy.size();

  const auto [got, got_logits] = greedy(model, ids, static_cast<int>(want_greedy.size()), kv_dtype);
  for (size_t k = 0; k < want_greedy.size(); ++k) {  // step k's logits follow the same tokens (the ones checked)
    std::vector<float> got_row(k_cols), want_row(k_cols);
    for (size_t j = 0; j < k_cols; ++j) {
      got_row[j] = got_logits[k][static_cast<size_t>(cols[k * k_cols + j])];
      want_row[j] = vals[k * k_cols + j];
    }
    const Diff d = diff(got_row, want_row);
    EXPECT_TRUE(d.same_nonfinite && d.max_abs <= max_abs) << "greedy step " << k << " logits: " << describe(d);
    if (margins[k] < min_margin) break;  // a near-tie: this token and the later ones may differ
    ASSERT_EQ(got[k], want_greedy[k]) << "greedy token " << k;
  }
}

TEST_P(DemoGolden, MatchesTransformers) {
  if (!is_available(kGoldenDevice)) GTEST_SKIP() << "no " << device_name(kGoldenDevice) << " device present";
  expect_demo_greedy(GetParam(), DType::F32, AttentionOperands::kFp32, kDemoLogitMaxAbs, kGreedyMinMargin);
}

// What `quatre serve` runs on the GPU with --attention-operands bf16: a BF16 latent cache (its default there), and q
// and the softmax weights rounded to BF16 where they meet it (the tensor-core key pass). On the CPU the operands stay
// fp32 (the backend may round, need not): the BF16 cache alone.
constexpr double kBf16DemoLogitMaxAbs = 0.1;  // logits up to ~18; the BF16 cache alone: 0.025 at most (CPU, 2026-12-07)
constexpr float kBf16GreedyMinMargin = 0.2f;

TEST_P(DemoGolden, StaysNearTransformersWithBf16CacheAndOperands) {
  if (!is_available(kGoldenDevice)) GTEST_SKIP() << "no " << device_name(kGoldenDevice) << " device present";
  expect_demo_greedy(GetParam(), DType::BF16, AttentionOperands::kBf16, kBf16DemoLogitMaxAbs, kBf16GreedyMinMargin);
}

#ifdef QUATRE_GOLDEN_CUDA
// The same with every prompt (two tokens or more) through the naive-form prefill kernel (mla_prefill.cu), which
// rounds the expanded k and v to BF16 as well; the decode steps on the absorbed kernels.
TEST_P(DemoGolden, StaysNearTransformersWithPromptsInTheNaiveForm) {
  if (!is_available(kGoldenDevice)) GTEST_SKIP() << "no " << device_name(kGoldenDevice) << " device present";
  struct Forced {  // on for this test only, however it ends
    Forced() { cuda::set_mla_prefill_for_tests(1); }
    ~Forced() { cuda::set_mla_prefill_for_tests(-1); }
  } const forced;
  expect_demo_greedy(GetParam(), DType::BF16, AttentionOperands::kBf16, kBf16DemoLogitMaxAbs, kBf16GreedyMinMargin);
}
#endif

INSTANTIATE_TEST_SUITE_P(TransformersGoldens, DemoGolden, testing::ValuesIn(golden_files("demo")), test_name);

}  // namespace
}  // namespace quatre::model::test
