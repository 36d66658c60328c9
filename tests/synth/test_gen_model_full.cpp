// gen-model at full width (one layer, few experts): the real shapes and dtypes go through the same table.
// Labelled slow: it writes ~100M parameters.
#include <filesystem>

#include <gtest/gtest.h>

#include "core/dtype.h"
#include "io/checkpoint.h"
#include "io/model_config.h"
#include "synth/gen_model.h"

namespace quatre {
namespace {

namespace fs = std::filesystem;

// Full width, one layer, few experts: the real shapes go through the same table (kept small for CI).
TEST(GenModel, FullWidthLayerHasTheRealShapes) {
  const fs::path dir = fs::temp_directory_path() / ("quatre_gen_full_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  synth::GenModelOptions o;
  o.config = io::preset("mistral-small-4");
  o.config.text.n_layers = 1;
  o.config.text.n_routed_experts = 4;
  o.config.text.vocab_size = 2048;
  o.config.vision.reset();
  o.format = io::CheckpointFormat::kMistralNative;
  o.fp8 = true;
  synth::generate_checkpoint(o, dir / "full");
  const io::Checkpoint ckpt = io::Checkpoint::open(dir / "full");
  EXPECT_EQ(ckpt.find_tensor("layers.0.attention.wkv_b.weight")->info->shape, (std::vector<int64_t>{6144, 256}));
  EXPECT_EQ(ckpt.find_tensor("layers.0.experts.3.w2.weight")->info->shape, (std::vector<int64_t>{4096, 2048}));
  EXPECT_EQ(ckpt.find_tensor("layers.0.experts.3.w2.weight")->info->dtype, DType::F8_E4M3);
  EXPECT_EQ(ckpt.find_tensor("layers.0.gate.weight")->info->dtype, DType::BF16);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace quatre
