// generate(): greedy output equals transformers' greedy continuation (the goldens), chunked prefill equals
// whole prefill, seeded sampling is reproducible, and every way of finishing is reported.
#include <filesystem>

#include <gtest/gtest.h>

#include "core/error.h"
#include "engine/generate.h"
#include "io/safetensors.h"
#include "engine_test_util.h"

namespace quatre::engine {
namespace {

namespace fs = std::filesystem;

class Generate : public test::TinyModelTest {};

TEST_F(Generate, GreedyEqualsTransformersGreedy) {
  const io::SafetensorsFile golden(fs::path(QUATRE_SOURCE_DIR) / "tests/data/golden/tiny-hf-bf16-s1.p13.release.safetensors");
  auto read_ids = [&](const char* name) {
    const io::TensorInfo* t = golden.find(name);
    std::vector<int64_t> v(static_cast<size_t>(t->numel()));
    std::memcpy(v.data(), golden.data(*t).data(), v.size() * 8);
    return std::vector<int32_t>(v.begin(), v.end());
  };
  const GenerateResult r = generate(*model_, greedy(read_ids("input_ids"), 32), /*eos_id=*/2, nullptr);
  EXPECT_EQ(r.ids, read_ids("greedy_ids"));
  EXPECT_EQ(r.finish, FinishReason::kLength);
  EXPECT_EQ(r.n_prompt_tokens, 13);
}

TEST_F(Generate, ChunkedPrefillEqualsWholePrefill) {
  const std::vector<int32_t> prompt = model::test::random_ids(150, loaded_->text().vocab_size, 3);
  const GenerateResult whole = generate(*model_, greedy(prompt, 12), 2, nullptr);
  for (int64_t chunk : {1, 7, 64}) {
    const GenerateResult chunked = generate(*model_, greedy(prompt, 12), 2, nullptr, {.prefill_chunk_tokens = chunk, .block_size = 16});
    EXPECT_EQ(chunked.ids, whole.ids) << "chunk " << chunk;
  }
  const GenerateResult small_blocks = generate(*model_, greedy(prompt, 12), 2, nullptr, {.prefill_chunk_tokens = 512, .block_size = 3});
  EXPECT_EQ(small_blocks.ids, whole.ids);
}

TEST_F(Generate, SeededSamplingIsReproducible) {
  GenerateRequest r = greedy({1, 1100, 1200}, 24);
  r.sampling.temperature = 1.0f;
  r.sampling.seed = 11;
  const GenerateResult a = generate(*model_, r, 2, nullptr), b = generate(*model_, r, 2, nullptr);
  r.sampling.seed = 12;
  const GenerateResult c = generate(*model_, r, 2, nullptr);
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_NE(a.ids, c.ids);
}

TEST_F(Generate, FinishReasons) {
  GenerateRequest r = greedy({1, 1100}, 50);
  r.ignore_eos = false;
  r.sampling.logit_bias = {{2, 100.0f}};  // EOS wins at once
  GenerateResult stop = generate(*model_, r, 2, nullptr);
  EXPECT_EQ(stop.ids, std::vector<int32_t>{2});
  EXPECT_EQ(stop.finish, FinishReason::kStop);

  r.sampling.logit_bias = {{1300, 100.0f}};
  r.stop_ids = {1300};
  stop = generate(*model_, r, 2, nullptr);
  EXPECT_EQ(stop.ids, std::vector<int32_t>{1300});
  EXPECT_EQ(stop.finish, FinishReason::kStop);

  int calls = 0;
  const GenerateResult cancelled = generate(*model_, greedy({1, 1100}, 50), 2, [&](int32_t) { return ++calls < 3; });
  EXPECT_EQ(cancelled.ids.size(), 3u);
  EXPECT_EQ(cancelled.finish, FinishReason::kCancelled);

  const GenerateResult length = generate(*model_, greedy({1, 1100}, 5), 2, nullptr);
  EXPECT_EQ(length.ids.size(), 5u);
  EXPECT_EQ(length.finish, FinishReason::kLength);
}

TEST_F(Generate, TheContextLimitEndsGenerationAsLength) {
  const int64_t context = loaded_->text().max_position_embeddings;  // 1024 for tiny
  const std::vector<int32_t> prompt = model::test::random_ids(context - 3, loaded_->text().vocab_size, 5);
  const GenerateResult r = generate(*model_, greedy(prompt, 100), 2, nullptr);
  EXPECT_EQ(r.ids.size(), 3u);
  EXPECT_EQ(r.finish, FinishReason::kLength);
}

TEST_F(Generate, BadRequestsAreInvalidRequests) {
  EXPECT_THROW(generate(*model_, greedy({}, 5), 2, nullptr), InvalidRequest);
  EXPECT_THROW(generate(*model_, greedy({1, 1536}, 5), 2, nullptr), InvalidRequest);
  EXPECT_THROW(generate(*model_, greedy({1, -1}, 5), 2, nullptr), InvalidRequest);
  EXPECT_THROW(generate(*model_, greedy({1}, 0), 2, nullptr), InvalidRequest);
  EXPECT_THROW(generate(*model_, greedy(std::vector<int32_t>(1024, 1), 5), 2, nullptr), InvalidRequest);
  GenerateRequest bad = greedy({1}, 5);
  bad.sampling.top_p = 2;
  EXPECT_THROW(generate(*model_, bad, 2, nullptr), InvalidRequest);
}

}  // namespace
}  // namespace quatre::engine
