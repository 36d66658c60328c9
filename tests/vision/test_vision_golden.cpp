// The vision path against tools/reference/goldens_vision.py (Pillow 12.3 and transformers 5.17 on the GPU host,
// tests/data/golden/vision/*.safetensors): alpha compositing and the bicubic resize bit for bit against Pillow, the
// normalised pixel values, the Pixtral tower's last hidden state, the projector output (image features) and the
// logits of prompts whose [IMG] embeddings are replaced by the features, on the tiny-hf-bf16-s1 checkpoint that
// gen-model regenerates bit for bit. The tower runs on the CPU backend here; test_vision_golden_cuda builds this file
// with QUATRE_VISION_GOLDEN_CUDA to run it on the CUDA backend (label gpu), against the same goldens.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "core/error.h"
#include "engine/generate.h"
#include "io/safetensors.h"
#include "model/prompt_run.h"
#include "model_test_util.h"
#include "synthetic_image.h"
#include "vision/decode.h"
#include "vision/preprocess.h"
#include "vision/resample.h"
#include "vision/vision_model.h"

namespace quatre::vision::test {
namespace {

#ifdef QUATRE_VISION_GOLDEN_CUDA
constexpr Device kTowerDevice = Device::kCuda;
#else
constexpr Device kTowerDevice = Device::kCpu;
#endif

namespace fs = std::filesystem;
using model::test::diff;
using model::test::describe;
using model::test::fnv1a64_of_safetensors;
using model::test::Diff;
using model::test::read_tensor;
using model::test::to_i32;

// fp32 on both sides; the tower is 2 layers of width 32, the text model as in tests/model/test_golden.cpp.
constexpr double kPixelMaxAbs = 1e-6;
constexpr double kHiddenMaxAbs = 2e-5;
constexpr double kLogitMaxAbs = 5e-5;

struct ImageSpec {
  int64_t h, w;
  int channels;
  uint64_t seed;
};
// tools/reference/goldens_vision.py IMAGES
const std::map<std::string, ImageSpec> kImages = {
    {"a50x70", {50, 70, 3, 1}},   {"tiny5x3", {5, 3, 3, 2}},       {"long17x300", {17, 300, 3, 3}},
    {"down230x150", {230, 150, 3, 4}}, {"rgba40x50", {40, 50, 4, 5}},
};

fs::path golden_dir() { return fs::path(QUATRE_SOURCE_DIR) / "tests" / "data" / "golden" / "vision"; }

std::vector<fs::path> golden_files() { return model::test::safetensors_in(golden_dir()); }

// RGB of a golden image as the script fed it to transformers: the synthetic pixels, alpha dropped as
// transformers 5.17's convert_to_rgb does.
RgbImage golden_rgb(const std::string& name, uint64_t* pixel_sum) {
  const ImageSpec s = kImages.at(name);
  return to_rgb(synthetic_image(s.h, s.w, s.channels, s.seed, pixel_sum), AlphaMode::kDrop);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string part; std::getline(ss, part, sep);) out.push_back(part);
  return out;
}

TEST(VisionGolden, AllFilesPresent) {
  EXPECT_EQ(golden_files().size(), 7u) << "regenerate with tools/reference/goldens_vision.py on a GPU host";
}

// Compositing, Pillow's resize and the normalisation, per image file.
TEST(VisionGolden, PreprocessingMatchesPillow) {
  const io::VisionConfig config = *io::preset("tiny").vision;
  int checked = 0, n_alpha = 0;
  for (const fs::path& path : golden_files()) {
    const io::SafetensorsFile golden(path);
    if (golden.find("pil_resized") == nullptr) continue;
    const std::string name = golden.metadata().at("case");
    SCOPED_TRACE(name);
    uint64_t sum = 0;
    const RgbImage rgb = golden_rgb(name, &sum);
    ASSERT_EQ(std::to_string(sum), golden.metadata().at("pixel_sum")) << "synthetic_image differs from the script's";
    const std::vector<uint8_t> composited = read_tensor<uint8_t>(golden, "composited");
    if (!composited.empty()) {
      EXPECT_EQ(golden.metadata().at("convert_to_rgb"), "drops alpha (= convert('RGB'))");
      EXPECT_EQ(rgb.rgb, composited) << "transformers' convert_to_rgb";
      const ImageSpec s = kImages.at(name);
      const RgbImage white = composite_on_white(synthetic_image(s.h, s.w, s.channels, s.seed));
      EXPECT_EQ(white.rgb, read_tensor<uint8_t>(golden, "composited_white")) << "Pillow's alpha_composite onto white";
      ++n_alpha;
    }

    const tokenizer::ImageGrid g = target_grid(rgb.width, rgb.height, config);
    const io::TensorInfo* info = golden.find("pil_resized");
    ASSERT_EQ(info->shape, (std::vector<int64_t>{g.resized_height_px, g.resized_width_px, 3})) << "target size";
    const RgbImage resized = resize_bicubic(rgb, g.resized_width_px, g.resized_height_px);
    const std::vector<uint8_t> want = read_tensor<uint8_t>(golden, "pil_resized");
    int64_t n_diff = 0;
    for (size_t i = 0; i < want.size(); ++i) n_diff += resized.rgb[i] != want[i];
    EXPECT_EQ(n_diff, 0) << "bytes differing from Pillow's BICUBIC resize";

    const PixelValues pv = preprocess(rgb, config);
    const Diff d = diff(pv.chw, read_tensor<float>(golden, "pixel_values"));
    EXPECT_LE(d.max_abs, kPixelMaxAbs) << describe(d);
    ++checked;
  }
  EXPECT_EQ(checked, 5);
  EXPECT_EQ(n_alpha, 1);
}

// Sides past the tower's table or off its grid, and pixel data of the wrong size: InvalidRequest.
TEST(VisionGolden, EncoderRefusesSizesPastItsTable) {
  if (!is_available(kTowerDevice)) GTEST_SKIP() << "no " << device_name(kTowerDevice) << " device present";
  model::test::TempDir dir;
  const model::test::LoadedModel loaded(model::test::make_checkpoint(dir, "hf", {"tiny", io::CheckpointFormat::kHuggingFace, false, 1}));
  const VisionModel model(loaded.checkpoint, make_backend(kTowerDevice));  // 112 px, patch 14
  const std::vector<PixelValues> too_big = {PixelValues{.height = 140, .width = 28, .chw = std::vector<float>(3 * 140 * 28)}};
  EXPECT_THROW(model.image_features(too_big), InvalidRequest);
  const std::vector<PixelValues> odd = {PixelValues{.height = 42, .width = 28, .chw = std::vector<float>(3 * 42 * 28)}};
  EXPECT_THROW(model.image_features(odd), InvalidRequest);
  const std::vector<PixelValues> short_pixels = {PixelValues{.height = 28, .width = 28, .chw = std::vector<float>(3 * 28)}};
  EXPECT_THROW(model.image_features(short_pixels), InvalidRequest);
}

// Two threads encoding at once (a server's connections) get the bits of one encoding alone: runs take turns on the
// tower's backend and scratch.
TEST(VisionGolden, ConcurrentRunsGiveTheSerialBits) {
  if (!is_available(kTowerDevice)) GTEST_SKIP() << "no " << device_name(kTowerDevice) << " device present";
  model::test::TempDir dir;
  const model::test::LoadedModel loaded(model::test::make_checkpoint(dir, "hf", {"tiny", io::CheckpointFormat::kHuggingFace, false, 1}));
  const VisionModel model(loaded.checkpoint, make_backend(kTowerDevice));
  model.warm_up();  // one run of the largest image first, as quatre serve does on a GPU
  const io::VisionConfig& vc = *loaded.checkpoint.config().vision;
  const std::vector<PixelValues> a = {preprocess(golden_rgb("a50x70", nullptr), vc)};
  const std::vector<PixelValues> b = {preprocess(golden_rgb("down230x150", nullptr), vc), preprocess(golden_rgb("tiny5x3", nullptr), vc)};
  const std::vector<float> want_a = model.image_features(a), want_b = model.image_features(b);
  std::vector<float> got_a[4], got_b[4];
  {
    std::thread ta([&] { for (auto& g : got_a) g = model.image_features(a); });
    std::thread tb([&] { for (auto& g : got_b) g = model.image_features(b); });
    ta.join();
    tb.join();
  }
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(got_a[i], want_a) << i;
    EXPECT_EQ(got_b[i], want_b) << i;
  }
}

#ifdef QUATRE_VISION_GOLDEN_CUDA
// The tower with BF16 attention operands (what quatre runs on CUDA by default, --attention-operands auto): its hidden
// state and features stay within BF16's rounding of transformers' fp32 ones, and differ from the fp32 run.
TEST(VisionGolden, Bf16AttentionOperandsStayNearTransformers) {
  if (!is_available(kTowerDevice)) GTEST_SKIP() << "no " << device_name(kTowerDevice) << " device present";
  model::test::TempDir dir;
  const fs::path ckpt = model::test::make_checkpoint(dir, "hf", {"tiny", io::CheckpointFormat::kHuggingFace, false, 1});
  const io::Checkpoint checkpoint = io::Checkpoint::open(ckpt);
  const io::VisionConfig& vc = *checkpoint.config().vision;
  const VisionModel bf16(checkpoint, make_backend(kTowerDevice), {.bf16_attention_operands = true});
  const VisionModel fp32(checkpoint, make_backend(kTowerDevice));
  int checked = 0;
  for (const fs::path& path : golden_files()) {
    const io::SafetensorsFile golden(path);
    if (golden.find("image_features") == nullptr) continue;
    SCOPED_TRACE(golden.metadata().at("model_case"));
    std::vector<PixelValues> images;
    for (const std::string& name : split(golden.metadata().at("images"), ',')) {
      images.push_back(preprocess(golden_rgb(name, nullptr), vc));
    }
    std::vector<float> hidden, features, hidden32;
    bf16.run(images, &hidden, &features);
    fp32.run(images, &hidden32, nullptr);
    EXPECT_TRUE(model::test::near(hidden, read_tensor<float>(golden, "vision_hidden"), 1e-2, 5e-2)) << "vision tower";
    EXPECT_TRUE(model::test::near(features, read_tensor<float>(golden, "image_features"), 1e-2, 5e-2)) << "features";
    const char* tc = std::getenv("QUATRE_CUDA_VISION_TC");  // =0: the fp32 kernel, which computes in fp32 anyway
    if (tc == nullptr || std::string(tc) != "0") {
      EXPECT_GT(diff(hidden, hidden32).max_abs, 1e-6) << "the operands were not rounded";
    }
    ++checked;
  }
  EXPECT_GT(checked, 0);
}
#endif

// Tower, projector and logits with the features spliced in.
TEST(VisionGolden, EncoderAndLogitsMatchTransformers) {
  if (!is_available(kTowerDevice)) GTEST_SKIP() << "no " << device_name(kTowerDevice) << " device present";
  model::test::TempDir dir;
  const fs::path ckpt = model::test::make_checkpoint(dir, "hf", {"tiny", io::CheckpointFormat::kHuggingFace, false, 1});
  const model::test::LoadedModel loaded(ckpt);
  const io::VisionConfig& vc = *loaded.checkpoint.config().vision;
  const VisionModel vision(loaded.checkpoint, make_backend(kTowerDevice));  // the text model on the CPU
  const model::TextModel text(loaded.text(), loaded.weights, *loaded.backend,
                              {.mla_form = MlaForm::kAbsorbed, .softmax_scale = model::SoftmaxScale::kTransformers});
  char hash[17];
  std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(fnv1a64_of_safetensors(ckpt)));

  int checked = 0;
  for (const fs::path& path : golden_files()) {
    const io::SafetensorsFile golden(path);
    if (golden.find("image_features") == nullptr) continue;
    const auto& meta = golden.metadata();
    SCOPED_TRACE(meta.at("model_case"));
    ASSERT_EQ(hash, meta.at("weights_fnv1a64")) << "gen-model no longer writes the checkpoint the goldens came from";
    std::vector<PixelValues> images;
    for (const std::string& name : split(meta.at("images"), ',')) images.push_back(preprocess(golden_rgb(name, nullptr), vc));

    std::vector<float> hidden, features;
    vision.run(images, &hidden, &features);
    const Diff dh = diff(hidden, read_tensor<float>(golden, "vision_hidden"));
    EXPECT_LE(dh.max_abs, kHiddenMaxAbs) << "vision tower: " << describe(dh);
    const Diff df = diff(features, read_tensor<float>(golden, "image_features"));
    EXPECT_LE(df.max_abs, kHiddenMaxAbs) << "image features: " << describe(df);

    const std::vector<int32_t> ids = to_i32(read_tensor<int64_t>(golden, "input_ids"));
    std::vector<int32_t> image_rows;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] == vc.image_token_id) image_rows.push_back(static_cast<int32_t>(i));
    }
    ASSERT_EQ(image_rows.size() * static_cast<size_t>(loaded.text().hidden_size), features.size());
    const std::vector<int32_t> rows = to_i32(read_tensor<int64_t>(golden, "logit_rows"));
    const model::PromptRun run = model::run_prompt(text, ids, {.logit_rows = rows, .image_rows = image_rows, .image_embeddings = features});
    const Diff dl = diff(run.logits, read_tensor<float>(golden, "logits"));
    EXPECT_LE(dl.max_abs, kLogitMaxAbs) << "logits: " << describe(dl);
    // and the splice matters: without it the logits are far off
    const model::PromptRun plain = model::run_prompt(text, ids, {.logit_rows = rows});
    EXPECT_GT(diff(plain.logits, run.logits).max_abs, 1e-2);

    // generate() splices the same features when the prompt is prefilled in chunks that cut through the images:
    // its greedy first token is the argmax of the golden's last row (T - 1 is always stored)
    const std::vector<float> want_logits = read_tensor<float>(golden, "logits");
    const int64_t V = loaded.text().vocab_size;
    ASSERT_EQ(rows.back(), static_cast<int32_t>(ids.size()) - 1);
    const auto last = want_logits.end() - V;
    const auto want_id = static_cast<int32_t>(std::max_element(last, want_logits.end()) - last);
    engine::GenerateRequest request;
    request.prompt = ids;
    request.max_tokens = 1;
    request.sampling.temperature = 0.0f;
    request.image_embeddings = features;
    request.image_token_id = static_cast<int32_t>(vc.image_token_id);
    const engine::GenerateResult result = engine::generate(text, request, -1, {}, {.prefill_chunk_tokens = 5});
    ASSERT_EQ(result.ids.size(), 1u);
    EXPECT_EQ(result.ids[0], want_id) << "generate() with images, prefilled 5 tokens at a time";
    ++checked;
  }
  EXPECT_EQ(checked, 6);
}

}  // namespace
}  // namespace quatre::vision::test
