// The host side of --random-weights (cli/random_weights.h): the --dtype names and the stored bytes per parameter
// that the benchmarks' rooflines count, for the random dtypes and for checkpoints (FP8, BF16, quatre_int4 in its
// variants). The GPU drawing itself is tested in tests/backend/cuda/test_cuda_int4.cpp.
#include <gtest/gtest.h>

#include "cli/random_weights.h"
#include "core/error.h"

namespace quatre::cli {
namespace {

TEST(RandomWeights, DtypeNames) {
  EXPECT_EQ(parse_random_dtype("fp8", "bench"), RandomDType::kFp8);
  EXPECT_EQ(parse_random_dtype("bf16", "bench"), RandomDType::kBf16);
  EXPECT_EQ(parse_random_dtype("int4", "bench"), RandomDType::kInt4);
  try {
    (void)parse_random_dtype("int8", "bench");
    FAIL() << "int8 accepted";
  } catch (const InvalidRequest& e) {
    EXPECT_NE(std::string(e.what()).find("--dtype int8 (expected fp8, bf16 or int4)"), std::string::npos) << e.what();
  }
}

TEST(RandomWeights, ConfigIsThePresetCutToItsFirstLayers) {
  const io::TextConfig full = io::preset("mistral-small-4").text;
  EXPECT_EQ(random_weights_config("mistral-small-4", 0).n_layers, full.n_layers);
  const io::TextConfig cut = random_weights_config("mistral-small-4", 16);
  EXPECT_EQ(cut.n_layers, 16);
  EXPECT_EQ(cut.hidden_size, full.hidden_size);
  EXPECT_EQ(cut.n_routed_experts, full.n_routed_experts);
  // A preset whose first layer is dense: one layer left is that dense layer.
  const io::TextConfig dense = random_weights_config("tiny-dense", 1);
  EXPECT_EQ(dense.n_layers, 1);
  EXPECT_EQ(dense.first_k_dense_replace, 1);
  EXPECT_FALSE(dense.is_moe_layer(0));
  EXPECT_THROW((void)random_weights_config("no-such-preset", 0), InvalidRequest);
}

TEST(RandomWeights, BytesPerParameterCountCodesAndScales) {
  EXPECT_DOUBLE_EQ(linear_bytes(RandomDType::kFp8).experts, 1.0);
  EXPECT_DOUBLE_EQ(linear_bytes(RandomDType::kFp8).other, 1.0);
  EXPECT_DOUBLE_EQ(linear_bytes(RandomDType::kBf16).experts, 2.0);
  // 4-bit experts, G = 128: half a byte of code and a BF16 scale per 128 weights; the other linears FP8.
  EXPECT_DOUBLE_EQ(linear_bytes(RandomDType::kInt4).experts, 0.5 + 2.0 / 128);
  EXPECT_DOUBLE_EQ(linear_bytes(RandomDType::kInt4).other, 1.0);
}

TEST(RandomWeights, BytesPerParameterOfACheckpointFollowItsQuantization) {
  io::ModelConfig c;
  EXPECT_DOUBLE_EQ(linear_bytes(c).experts, 2.0);
  c.quantization = io::WeightQuantization::kFp8PerTensor;
  EXPECT_DOUBLE_EQ(linear_bytes(c).other, 1.0);
  c.quantization = io::WeightQuantization::kInt4;
  c.int4 = {.group_size = 64, .is_symmetric = true, .modules = io::Int4Modules::kExperts};
  EXPECT_DOUBLE_EQ(linear_bytes(c).experts, 0.5 + 2.0 / 64);
  EXPECT_DOUBLE_EQ(linear_bytes(c).other, 2.0);
  c.int4.others_fp8 = true;  // quantised from the FP8 release: its other linears kept FP8
  EXPECT_DOUBLE_EQ(linear_bytes(c).other, 1.0);
  c.int4 = {.group_size = 32, .is_symmetric = false, .modules = io::Int4Modules::kAll};  // scale and offset a group
  EXPECT_DOUBLE_EQ(linear_bytes(c).experts, 0.5 + 4.0 / 32);
  EXPECT_DOUBLE_EQ(linear_bytes(c).other, 0.5 + 4.0 / 32);
}

}  // namespace
}  // namespace quatre::cli
