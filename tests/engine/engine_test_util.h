// Shared by the engine tests: one tiny model per test suite (the checkpoint of the goldens
// tiny-hf-bf16-s1, so greedy outputs can be compared with transformers), and request helpers.
#pragma once

#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include "engine/generate.h"
#include "model_test_util.h"

namespace quatre::engine::test {

class TinyModelTest : public testing::Test {
 protected:
  static void SetUpTestSuite();
  static void TearDownTestSuite();
  // Greedy, EOS ignored, so outputs have a known length.
  static GenerateRequest greedy(std::vector<int32_t> prompt, int32_t max_tokens);
  // Deterministic ids in the model's vocabulary.
  static std::vector<int32_t> ids(int64_t n, uint64_t seed);

  static model::test::TempDir* dir_;
  static model::test::LoadedModel* loaded_;
  static model::TextModel* model_;
};

}  // namespace quatre::engine::test
