// KV cache dtypes on the CPU backend: kv_write stores BF16 / FP8 E4M3 (scale 1, saturated) values bit-exactly as
// the scalar conversions of core/dtype.h; logits over a cache of each dtype stay within a stated tolerance of
// the F32 cache's; the Engine runs on a BF16 cache (alone == in a batch); sizing by dtype and the capacity line.
#include <algorithm>
#include <cmath>
#include <cstring>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "core/arena.h"
#include "core/error.h"
#include "core/rng.h"
#include "engine/engine.h"
#include "engine_test_util.h"
#include "model/kv_cache.h"
#include "model/step_inputs.h"

namespace quatre::engine {
namespace {

class KvDtypeTest : public test::TinyModelTest {
 protected:
  // [n, V] logits of every position of `seq`, run in chunks of `chunk` tokens so later chunks attend to
  // entries that earlier ones wrote to (and read back from) the cache of `dtype`.
  static std::vector<float> logits_with(const std::vector<int32_t>& seq, DType dtype, int64_t chunk) {
    const int64_t n = static_cast<int64_t>(seq.size()), V = model_->config().vocab_size, bs = 8;
    model::KvCache kv(model_->config(), model_->backend(), {.n_blocks = (n + bs - 1) / bs, .block_size = bs, .dtype = dtype});
    const std::vector<int32_t> blocks = kv.allocate((n + bs - 1) / bs);
    std::vector<float> out(static_cast<size_t>(n * V));
    Arena arena(model_->backend().memory());
    for (int64_t begin = 0; begin < n; begin += chunk) {
      const int64_t len = std::min(chunk, n - begin);
      model::StepBuilder b(bs);
      b.add({.block_table = blocks, .n_cached = begin, .ids = std::span(seq).subspan(static_cast<size_t>(begin), static_cast<size_t>(len)), .positions = {}},
            model::LogitRows::kAll);
      arena.reset();
      const Tensor t = model_->forward(b.inputs(), kv, arena);
      model_->backend().copy_to_host(t, out.data() + begin * V);
    }
    return out;
  }
  // max |a - b| / max |a|
  static double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
    double diff = 0, scale = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
      scale = std::max(scale, std::fabs(static_cast<double>(a[i])));
    }
    return diff / scale;
  }
};

TEST_F(KvDtypeTest, KvWriteStoresTheRoundedValues) {
  const io::TextConfig& c = model_->config();
  const int64_t R = c.kv_lora_rank, Dr = c.qk_rope_head_dim, T = 3;
  Backend& be = model_->backend();
  Arena arena(be.memory());
  Tensor c_kv = arena.tensor(DType::F32, {T, R}), k_rope = arena.tensor(DType::F32, {T, Dr});
  Xoshiro256 rng(5);
  for (int64_t i = 0; i < T * R; ++i) c_kv.data_as<float>()[i] = static_cast<float>(rng.uniform() * 8 - 4);
  for (int64_t i = 0; i < T * Dr; ++i) k_rope.data_as<float>()[i] = static_cast<float>(rng.uniform() * 2000 - 1000);  // some beyond 448
  c_kv.data_as<float>()[0] = 1000.0f;
  c_kv.data_as<float>()[1] = -1e6f;
  const std::vector<int64_t> slots = {5, 0, 11};
  for (DType dt : {DType::BF16, DType::F8_E4M3}) {
    model::KvCache kv(c, be, {.n_blocks = 2, .block_size = 8, .poison = false, .dtype = dt});
    be.kv_write(kv.layer(1), c_kv, k_rope, slots);
    const Tensor layer = kv.layer(1);
    ASSERT_EQ(layer.dtype(), dt);
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t e = 0; e < R + Dr; ++e) {
        const float v = e < R ? c_kv.data_as<float>()[t * R + e] : k_rope.data_as<float>()[t * Dr + e - R];
        const size_t at = static_cast<size_t>(slots[static_cast<size_t>(t)] * (R + Dr) + e);
        if (dt == DType::BF16) {
          ASSERT_EQ(static_cast<const uint16_t*>(layer.data())[at], f32_to_bf16(v)) << "token " << t << " element " << e;
        } else {
          const uint8_t got = static_cast<const uint8_t*>(layer.data())[at];
          ASSERT_EQ(got, f32_to_fp8e4m3(v, true)) << "token " << t << " element " << e;
          ASSERT_LE(std::fabs(fp8e4m3_to_f32(got)), 448.0f);  // saturated, never NaN
        }
      }
    }
    if (dt == DType::F8_E4M3) {
      EXPECT_EQ(fp8e4m3_to_f32(static_cast<const uint8_t*>(layer.data())[5 * (R + Dr)]), 448.0f);
      EXPECT_EQ(fp8e4m3_to_f32(static_cast<const uint8_t*>(layer.data())[5 * (R + Dr) + 1]), -448.0f);
    }
  }
}

// Tolerances (max abs logit error relative to the largest F32 logit, over 48 positions, decode-like chunks):
// BF16 (8 mantissa bits) 1e-2 (measured 2.0e-3); FP8 E4M3 (3 mantissa bits, scale 1) 1.5e-1 (measured 6.0e-2).
TEST_F(KvDtypeTest, LogitsOverABf16OrFp8CacheStayCloseToF32) {
  const std::vector<int32_t> seq = ids(48, 51);
  const std::vector<float> f32 = logits_with(seq, DType::F32, 5);
  EXPECT_EQ(logits_with(seq, DType::F32, 48), f32);  // chunking itself changes nothing
  const double bf16 = relative_error(f32, logits_with(seq, DType::BF16, 5));
  const double fp8 = relative_error(f32, logits_with(seq, DType::F8_E4M3, 5));
  EXPECT_GT(bf16, 0.0);  // the cache really is rounded
  EXPECT_LT(bf16, 1e-2);
  EXPECT_GT(fp8, bf16);
  EXPECT_LT(fp8, 1.5e-1);
  std::printf("relative logit error: bf16 %.2e, fp8 %.2e\n", bf16, fp8);
}

TEST_F(KvDtypeTest, TheEngineOnABf16CacheEqualsGenerateOnOne) {
  const std::vector<GenerateRequest> requests = {greedy(ids(21, 52), 10), greedy(ids(40, 53), 8), greedy(ids(7, 54), 12)};
  for (DType dt : {DType::BF16, DType::F8_E4M3}) {
    Engine engine(*model_, {.n_blocks = 64, .block_size = 4, .max_tokens_per_step = 16, .kv_dtype = dt});
    std::vector<std::vector<int32_t>> got(requests.size());
    std::vector<int64_t> ids_of;
    for (const GenerateRequest& r : requests) ids_of.push_back(engine.submit(r));
    while (engine.has_work()) {
      for (const RequestOutput& o : engine.step()) {
        const size_t i = static_cast<size_t>(std::find(ids_of.begin(), ids_of.end(), o.id) - ids_of.begin());
        if (o.token) got[i].push_back(*o.token);
      }
    }
    for (size_t i = 0; i < requests.size(); ++i) {
      EXPECT_EQ(got[i], generate(*model_, requests[i], 2, nullptr, {.kv_dtype = dt}).ids) << dtype_name(dt) << " request " << i;
    }
    EXPECT_EQ(engine.block_pool().n_in_use(), 0);
  }
}

TEST_F(KvDtypeTest, SizingAndTheCapacityLineFollowTheDtype) {
  const io::TextConfig& t = model_->config();
  const int64_t elems_per_block = t.n_layers * 16 * (t.kv_lora_rank + t.qk_rope_head_dim);
  EXPECT_EQ(model::kv_block_bytes(t, 16, DType::F32), elems_per_block * 4);
  EXPECT_EQ(model::kv_block_bytes(t, 16, DType::BF16), elems_per_block * 2);
  EXPECT_EQ(model::kv_block_bytes(t, 16, DType::F8_E4M3), elems_per_block);
  const int64_t budget = 100 * elems_per_block + 3;
  EXPECT_EQ(kv_blocks_for_bytes(t, 16, budget, DType::F32), 25);
  EXPECT_EQ(kv_blocks_for_bytes(t, 16, budget, DType::BF16), 50);
  EXPECT_EQ(kv_blocks_for_bytes(t, 16, budget, DType::F8_E4M3), 100);
  EXPECT_EQ(kv_blocks_for_gib(t, 16, 0.5, DType::BF16), (int64_t{1} << 29) / (elems_per_block * 2));
  EXPECT_THROW(kv_blocks_for_gib(t, 16, 0, DType::BF16), InvalidRequest);
  EXPECT_THROW(kv_blocks_for_gib(t, 16, -1, DType::BF16), InvalidRequest);
  EXPECT_THROW(kv_blocks_for_gib(t, 16, std::nan(""), DType::BF16), InvalidRequest);
  EXPECT_THROW(kv_blocks_for_gib(t, 16, 1e-12, DType::BF16), InvalidRequest);  // not one block

  for (auto [dt, name] : {std::pair{DType::F32, "f32"}, std::pair{DType::BF16, "bf16"}, std::pair{DType::F8_E4M3, "fp8"}}) {
    EXPECT_EQ(model::parse_kv_dtype(name), dt);
    EXPECT_EQ(model::kv_dtype_name(dt), name);
    Engine engine(*model_, {.n_blocks = 256, .block_size = 16, .kv_dtype = dt});
    const double mib = static_cast<double>(256 * elems_per_block * static_cast<int64_t>(dtype_size(dt))) / (1 << 20);
    EXPECT_NE(engine.capacity_line().find(fmt::format("= 4096 tokens ({:.1f} MiB {})", mib, name)), std::string::npos)
        << engine.capacity_line();
  }
  EXPECT_THROW(model::parse_kv_dtype("fp16"), InvalidRequest);
  EXPECT_THROW(model::KvCache(t, model_->backend(), {.n_blocks = 1, .block_size = 4, .dtype = DType::I32}), InvalidRequest);
}

}  // namespace
}  // namespace quatre::engine
