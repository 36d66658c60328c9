// Images through the Engine on the tiny model with its 2-layer vision tower (CPU): features from the real tower
// spliced at the [IMG] rows equal generate() (itself checked against transformers in tests/vision) whatever the
// prefill chunks (which cut through the images), under preemption (recompute re-splices) and for forked choices
// (which share the image prefix); the prefix cache hashes image content: the same image hits and equals a miss,
// another image behind the same ids does not hit; no block leaks.
#include <algorithm>
#include <map>
#include <memory>

#include <gtest/gtest.h>

#include "core/error.h"
#include "engine/engine.h"
#include "engine_test_util.h"
#include "synthetic_image.h"
#include "vision/decode.h"
#include "vision/preprocess.h"
#include "vision/vision_model.h"

namespace quatre::engine {
namespace {

constexpr int32_t kEos = 2;

struct Image {
  std::vector<int32_t> token_ids;  // its [IMG]/[IMG_BREAK]/[IMG_END] layout
  std::vector<float> features;     // [n_img, D]
};

class EngineImagesTest : public test::TinyModelTest {
 protected:
  static void SetUpTestSuite() {
    TinyModelTest::SetUpTestSuite();
    vision_ = new vision::VisionModel(loaded_->checkpoint, make_backend(Device::kCpu));
  }
  static void TearDownTestSuite() {
    delete vision_;
    vision_ = nullptr;
    TinyModelTest::TearDownTestSuite();
  }
  static const io::VisionConfig& vc() { return *loaded_->checkpoint.config().vision; }

  // A synthetic h x w image (the goldens' pattern, seeded), encoded by the tower.
  static Image image(int64_t h, int64_t w, uint64_t seed) {
    const vision::RgbImage rgb = vision::to_rgb(vision::test::synthetic_image(h, w, 3, seed), vision::AlphaMode::kCompositeOnWhite);
    const vision::PixelValues pixels = vision::preprocess(rgb, vc());
    Image out;
    out.token_ids = vision::image_token_ids(vision::target_grid(w, h, vc()), vc());
    out.features = vision_->image_features(std::span(&pixels, 1));
    return out;
  }
  // Text ids that are never the image token.
  static std::vector<int32_t> text(int64_t n, uint64_t seed) {
    std::vector<int32_t> t = ids(n, seed);
    for (int32_t& id : t) id = id == static_cast<int32_t>(vc().image_token_id) ? id + 1 : id;
    return t;
  }
  // head, the images in order, tail; greedy.
  static GenerateRequest request(const std::vector<int32_t>& head, const std::vector<const Image*>& images, const std::vector<int32_t>& tail,
                                 int32_t max_tokens) {
    GenerateRequest r = greedy(head, max_tokens);
    for (const Image* im : images) {
      r.prompt.insert(r.prompt.end(), im->token_ids.begin(), im->token_ids.end());
      r.image_embeddings.insert(r.image_embeddings.end(), im->features.begin(), im->features.end());
    }
    r.prompt.insert(r.prompt.end(), tail.begin(), tail.end());
    r.image_token_id = static_cast<int32_t>(vc().image_token_id);
    return r;
  }
  static std::vector<int32_t> alone(const GenerateRequest& r) { return generate(*model_, r, kEos, nullptr).ids; }

  // Submits requests[i] before step arrivals[i], steps until idle, checks the pool after every step; the
  // tokens of each choice by submission index.
  static std::vector<std::vector<std::vector<int32_t>>> run(Engine& engine, const std::vector<GenerateRequest>& requests,
                                                            const std::vector<int>& arrivals) {
    std::map<int64_t, size_t> index;
    std::vector<std::vector<std::vector<int32_t>>> out(requests.size());
    size_t next = 0;
    for (int step = 0; step < 10000; ++step) {
      for (; next < requests.size() && arrivals[next] <= step; ++next) {
        index[engine.submit(requests[next])] = next;
        out[next].resize(static_cast<size_t>(requests[next].n));
      }
      if (next == requests.size() && !engine.has_work()) break;
      for (const RequestOutput& o : engine.step()) {
        EXPECT_NE(o.finish, std::optional(FinishReason::kError)) << o.error;
        if (o.token) out[index.at(o.id)].at(static_cast<size_t>(o.choice)).push_back(*o.token);
      }
      engine.block_pool().check_invariants();
    }
    EXPECT_FALSE(engine.has_work());
    EXPECT_EQ(engine.block_pool().n_in_use(), 0) << "blocks leaked";
    return out;
  }

  static vision::VisionModel* vision_;
};

vision::VisionModel* EngineImagesTest::vision_ = nullptr;

TEST_F(EngineImagesTest, ImagesThroughTheEngineEqualGenerateWhateverTheChunks) {
  const Image a = image(60, 90, 1), b = image(40, 30, 2);  // 3x4 and 2x2 [IMG] grids
  const GenerateRequest r = request(text(6, 1), {&a, &b}, text(9, 2), 12);
  const std::vector<int32_t> want = alone(r);
  GenerateRequest text_only = r;
  text_only.image_embeddings.clear();
  ASSERT_NE(alone(text_only), want) << "the splice must matter for this test to mean anything";

  for (int64_t budget : {1, 3, 7, 512}) {
    for (int64_t block_size : {4, 16}) {
      Engine engine(*model_, {.n_blocks = 64, .block_size = block_size, .max_tokens_per_step = budget});
      EXPECT_EQ(run(engine, {r}, {0})[0][0], want) << "budget " << budget << ", block size " << block_size;
    }
  }
  // In a busy batch, next to text requests and another image request.
  const GenerateRequest other = request(text(3, 3), {&b}, text(20, 4), 9);
  Engine engine(*model_, {.n_blocks = 128, .block_size = 4, .max_tokens_per_step = 11, .max_running = 8});
  const auto got = run(engine, {greedy(text(30, 5), 10), r, other, greedy(text(7, 6), 14)}, {0, 1, 1, 4});
  EXPECT_EQ(got[1][0], want);
  EXPECT_EQ(got[2][0], alone(other));
  EXPECT_EQ(got[0][0], alone(greedy(text(30, 5), 10)));
}

TEST_F(EngineImagesTest, TheSameImageHitsThePrefixCacheAndEqualsAMiss) {
  const Image a = image(112, 112, 3);  // 4x4 grid: 20 layout tokens
  const std::vector<int32_t> head = text(30, 7);
  const GenerateRequest first = request(head, {&a}, text(5, 8), 6);
  GenerateRequest second = request(head, {&a}, text(11, 9), 6);
  second.image_row_hashes = hash_image_rows(second.image_embeddings, model_->config().hidden_size);  // as the server does
  const int64_t n_first = static_cast<int64_t>(first.prompt.size()), n_second = static_cast<int64_t>(second.prompt.size());
  ASSERT_EQ(n_first, 30 + 20 + 5);

  Engine engine(*model_, {.n_blocks = 64, .block_size = 8});
  EXPECT_EQ(run(engine, {first}, {0})[0][0], alone(first));
  const int64_t before = engine.stats().n_forwarded_tokens;
  EXPECT_EQ(run(engine, {second}, {0})[0][0], alone(second));
  // The 6 full blocks of the shared 50 tokens (head and image) are hits: only the rest is computed.
  EXPECT_EQ(engine.stats().n_forwarded_tokens - before, (n_second - 48) + 5);
}

TEST_F(EngineImagesTest, AnotherImageBehindTheSameIdsDoesNotHit) {
  const Image a = image(112, 112, 3), b = image(112, 112, 4);
  ASSERT_EQ(a.token_ids, b.token_ids);
  ASSERT_NE(a.features, b.features);
  const std::vector<int32_t> head = text(30, 7), tail = text(5, 8);
  const GenerateRequest with_a = request(head, {&a}, tail, 6), with_b = request(head, {&b}, tail, 6);
  ASSERT_EQ(with_a.prompt, with_b.prompt);
  const std::vector<int32_t> want_b = alone(with_b);
  ASSERT_NE(alone(with_a), want_b) << "the two images must lead to different outputs for this test to mean anything";

  Engine engine(*model_, {.n_blocks = 64, .block_size = 8});
  run(engine, {with_a}, {0});
  const int64_t before = engine.stats().n_forwarded_tokens;
  EXPECT_EQ(run(engine, {with_b}, {0})[0][0], want_b);
  // Only the 3 blocks before the image (24 of the 30 head tokens) are shared.
  EXPECT_EQ(engine.stats().n_forwarded_tokens - before, (55 - 24) + 5);
  // and a again still hits its own blocks
  const int64_t mid = engine.stats().n_forwarded_tokens;
  run(engine, {with_a}, {0});
  EXPECT_EQ(engine.stats().n_forwarded_tokens - mid, (55 - 48) + 5);
}

TEST_F(EngineImagesTest, PreemptionRecomputesWithTheImages) {
  const Image a = image(60, 90, 5), b = image(40, 30, 6), c = image(84, 56, 7);
  const std::vector<GenerateRequest> requests = {request(text(5, 10), {&a}, text(4, 11), 30), request(text(2, 12), {&b, &c}, text(3, 13), 30),
                                                 request(text(7, 14), {&c}, text(2, 15), 30), greedy(text(9, 16), 30)};
  Engine engine(*model_, {.n_blocks = 26, .block_size = 4, .max_tokens_per_step = 16, .max_running = 4});  // 104 entries
  const auto got = run(engine, requests, {0, 0, 1, 3});
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(got[i][0], alone(requests[i])) << "request " << i;
  EXPECT_GT(engine.stats().n_preemptions, 0);
}

TEST_F(EngineImagesTest, ChoicesShareTheImagePrefix) {
  const Image a = image(112, 84, 8);  // 3x4 grid: 16 layout tokens
  GenerateRequest r = request(text(20, 17), {&a}, text(7, 18), 8);  // 43 tokens: 5 full blocks of 8 + 3
  r.sampling.temperature = 1.0f;
  r.sampling.seed = 42;
  r.n = 3;
  Engine engine(*model_, {.n_blocks = 32, .block_size = 8});
  const auto got = run(engine, {r}, {0});
  for (int32_t c = 0; c < 3; ++c) {
    GenerateRequest lone = r;
    lone.n = 1;
    lone.sampling.seed = choice_seed(42, c);
    EXPECT_EQ(got[0][static_cast<size_t>(c)], alone(lone)) << "choice " << c;
  }
  // The prompt once, then 7 tokens per choice; each fork also recomputes the 3 tokens of the partial block.
  EXPECT_EQ(engine.stats().n_forwarded_tokens, 43 + 3 * 7 + 2 * 3);
}

TEST_F(EngineImagesTest, FeaturesThatDoNotFitTheImageTokensAreRefused) {
  const Image a = image(40, 30, 9);
  GenerateRequest r = request(text(3, 19), {&a}, text(3, 20), 4);
  const size_t n = r.image_embeddings.size(), D = static_cast<size_t>(model_->config().hidden_size);
  Engine engine(*model_, {.n_blocks = 16, .block_size = 8});
  r.image_embeddings.resize(n - 1);
  EXPECT_THROW(engine.submit(r), InvalidRequest);
  r.image_embeddings.resize(n + D);  // a row too many
  EXPECT_THROW(engine.submit(r), InvalidRequest);
  r.image_embeddings = a.features;
  r.image_row_hashes = hash_image_rows(r.image_embeddings, model_->config().hidden_size);
  ASSERT_EQ(r.image_row_hashes.size(), n / D);
  r.image_row_hashes.pop_back();
  EXPECT_THROW(engine.submit(r), InvalidRequest);  // a hash short
  EXPECT_FALSE(engine.has_work());
  r.image_row_hashes.clear();
  EXPECT_NO_THROW(engine.submit(r));
}

}  // namespace
}  // namespace quatre::engine
