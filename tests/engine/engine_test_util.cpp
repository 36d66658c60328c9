// The shared tiny model of the engine tests.
#include "engine_test_util.h"

namespace quatre::engine::test {

model::test::TempDir* TinyModelTest::dir_ = nullptr;
model::test::LoadedModel* TinyModelTest::loaded_ = nullptr;
model::TextModel* TinyModelTest::model_ = nullptr;

void TinyModelTest::SetUpTestSuite() {
  dir_ = new model::test::TempDir();
  loaded_ = new model::test::LoadedModel(
      model::test::make_checkpoint(*dir_, "m", {"tiny", io::CheckpointFormat::kHuggingFace, false, 1}));
  model_ = new model::TextModel(loaded_->text(), loaded_->weights, *loaded_->backend);
}

void TinyModelTest::TearDownTestSuite() {
  delete model_;
  delete loaded_;
  delete dir_;
  model_ = nullptr;
  loaded_ = nullptr;
  dir_ = nullptr;
}

GenerateRequest TinyModelTest::greedy(std::vector<int32_t> prompt, int32_t max_tokens) {
  GenerateRequest r;
  r.prompt = std::move(prompt);
  r.sampling.temperature = 0;
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  return r;
}

std::vector<int32_t> TinyModelTest::ids(int64_t n, uint64_t seed) {
  return model::test::random_ids(n, loaded_->text().vocab_size, seed);
}

}  // namespace quatre::engine::test
