// CudaBackend ops against CpuBackend (itself tested against naive and float64 references) on fresh random inputs,
// for BF16 and FP8 weights (matmul's kernels: test_cuda_matmul.cpp): embed, rms_norm, add, split, gather, RoPE with
// the Llama-4 temperature (q or k alone too), the cache write (alone, and with its RMSNorm and RoPE in one launch),
// MLA in both forms over a paged cache with NaN-poisoned unused slots, routing (ties included; grouped in the same
// launch or not), FFN and MoE on both group sizes with a shared expert, a branch on the side stream. Errors:
// METHOD.md's ‖got − want‖ / ‖want‖ with an fp32 bound. Skips without a GPU.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "cuda_test_fixture.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/op_args.h"
#include "core/error.h"
#include "io/model_config.h"
#include "model/rope.h"

namespace quatre::cuda {
namespace {

using backend_test::ExpertWeights;
using backend_test::randn;
using backend_test::rel_l2;
using backend_test::StoredWeight;

class CudaOps : public CudaVsCpu {
 protected:
  // kv_b [H*(Dn+Dv), R] of normal values of std `stddev`, stored in `dtype` (FP8 at `scale`).
  static StoredWeight random_kv_b(const MlaDims& d, DType dtype, uint64_t seed, float stddev, float scale) {
    const int64_t rows = d.n_heads * (d.qk_nope_head_dim + d.v_head_dim);
    return StoredWeight(randn(static_cast<size_t>(rows * d.kv_lora_rank), seed, stddev), {rows, d.kv_lora_rank}, dtype,
                        scale);
  }
  // The CPU's MLA over the host operands in `a`, then `a` given the device's: q uploaded, cache_d, kv_b prepared.
  std::vector<float> cpu_mla_then_device_args(MlaArgs& a, const std::vector<float>& q, const Tensor& cache_d,
                                              const StoredWeight& kv_b) {
    const std::vector<float> want = vec(cpu_.mla_attention(a, host_arena_));
    a.q = up(q, {a.q.dim(0), a.q.dim(1)});
    a.kv_cache = cache_d;
    a.kv_b = prep(kv_b);
    return want;
  }
  // A paged latent cache [n_blocks, block_size, R+Dr] in kv_dtype on both backends, lat [S, R] and kr [S, Dr] written
  // at `slots` by each backend's kv_write (host: bytes owns the memory `host` views).
  struct BothCaches {
    std::vector<std::byte> bytes;
    Tensor host, device;
  };
  BothCaches written_caches(DType kv_dtype, int64_t n_blocks, int64_t block_size, const MlaDims& d,
                            std::vector<float>& lat, std::vector<float>& kr, std::span<const int64_t> slots) {
    const int64_t W = d.cache_width(), R = d.kv_lora_rank, Dr = d.qk_rope_head_dim;
    const auto S = static_cast<int64_t>(slots.size());
    const size_t cache_bytes = static_cast<size_t>(n_blocks * block_size * W) * dtype_size(kv_dtype);
    BothCaches c;
    c.bytes.resize(cache_bytes);
    c.device = Tensor(dev_arena_->allocate(cache_bytes), kv_dtype, {n_blocks, block_size, W}, Device::kCuda);
    c.host = Tensor(c.bytes.data(), kv_dtype, {n_blocks, block_size, W});
    gpu_->kv_write(c.device, up(lat, {S, R}), up(kr, {S, Dr}), slots);
    cpu_.kv_write(c.host, host(lat, {S, R}), host(kr, {S, Dr}), slots);
    return c;  // moved or elided: the vector keeps its buffer
  }
};

TEST_F(CudaOps, RowOpsMatchCpu) {
  for (DType dtype : {DType::BF16, DType::F8_E4M3}) {
    const int64_t V = 37, D = 72;
    const StoredWeight table(randn(V * D, 3, 0.5f), {V, D}, dtype, 0.004f);
    const StoredWeight gain(randn(D, 4, 1.0f), {D}, dtype, 0.01f);
    const std::vector<int32_t> ids = {36, 0, 5, 5, 17};
    const std::vector<float> e_cpu = vec(cpu_.embed(ids, table.weight, host_arena_));
    const Tensor e_gpu = gpu_->embed(ids, prep(table), *dev_arena_);
    EXPECT_EQ(down(e_gpu), e_cpu) << "embed is a copy";
    const std::vector<float> n_cpu = vec(cpu_.rms_norm(cpu_.embed(ids, table.weight, host_arena_), gain.weight, 1e-6f, host_arena_));
    EXPECT_LE(rel_l2(down(gpu_->rms_norm(e_gpu, prep(gain), 1e-6f, *dev_arena_)), n_cpu), kF32RelL2) << "rms_norm";
  }
  std::vector<float> x = randn(6 * 10, 5), y = randn(6 * 10, 6);
  Tensor xd = up(x, {6, 10});
  gpu_->add_to(xd, up(y, {6, 10}));
  std::vector<float> sum(x);
  for (size_t i = 0; i < sum.size(); ++i) sum[i] += y[i];
  EXPECT_EQ(down(xd), sum) << "add_to";
  auto [l, r] = gpu_->split_cols(up(x, {6, 10}), 7, *dev_arena_);
  auto [lc, rc] = cpu_.split_cols(host(x, {6, 10}), 7, host_arena_);
  EXPECT_EQ(down(l), vec(lc));
  EXPECT_EQ(down(r), vec(rc));
  const std::vector<int32_t> rows = {5, 0, 5, 2};
  EXPECT_EQ(down(gpu_->gather_rows(up(x, {6, 10}), rows, *dev_arena_)), vec(cpu_.gather_rows(host(x, {6, 10}), rows, host_arena_)));
  // set_rows (image features over [IMG] embeddings): the CPU backend's default on a host copy is the reference.
  const std::vector<int32_t> set = {4, 1, 3};
  const std::vector<float> values = randn(3 * 10, 7);
  Tensor xs = up(x, {6, 10});
  gpu_->set_rows(xs, set, values);
  std::vector<float> want(x);
  cpu_.set_rows(host(want, {6, 10}), set, values);
  EXPECT_EQ(down(xs), want) << "set_rows";
  EXPECT_TRUE(gpu_->can_set_rows());
  EXPECT_THROW(gpu_->set_rows(xs, std::vector<int32_t>{6}, randn(10, 8)), InvalidRequest) << "row out of range";
  Tensor f = dev_arena_->tensor(DType::F32, {3, 3});
  gpu_->fill(f, 2.5f);
  EXPECT_EQ(down(f), std::vector<float>(9, 2.5f));
}

// The backend reuses an upload when the same host buffer comes back with the same bytes (a step's positions, slots
// and block tables go up once, not once per layer): a buffer rewritten in place must go up again.
TEST_F(CudaOps, ReusedHostBufferIsUploadedAgainWhenItChanges) {
  std::vector<float> x = randn(6 * 10, 7);
  const Tensor xd = up(x, {6, 10});
  std::vector<int32_t> rows = {5, 0, 5, 2};
  for (int round = 0; round < 3; ++round) {
    const Tensor same = gpu_->gather_rows(xd, rows, *dev_arena_);  // the second call of a round may reuse
    EXPECT_EQ(down(gpu_->gather_rows(xd, rows, *dev_arena_)), vec(cpu_.gather_rows(host(x, {6, 10}), rows, host_arena_)))
        << "round " << round;
    EXPECT_EQ(down(same), vec(cpu_.gather_rows(host(x, {6, 10}), rows, host_arena_))) << "round " << round;
    rows[1] = round + 1;  // same buffer, same size, new content
  }
}

TEST_F(CudaOps, RopeWithTemperatureMatchesCpu) {
  const io::TextConfig text = io::preset("mistral-small-4").text;
  const MlaDims d{.n_heads = 4, .kv_lora_rank = 16, .qk_nope_head_dim = 8, .qk_rope_head_dim = text.qk_rope_head_dim,
                  .v_head_dim = 8};
  const std::vector<float> inv_freq = model::rope_inv_freq(text);
  const std::vector<int32_t> positions = {0, 1, 8191, 8192, 70000, 131071};
  const int64_t T = static_cast<int64_t>(positions.size());
  std::vector<float> q = randn(static_cast<size_t>(T * d.q_width()), 7), k = randn(static_cast<size_t>(T * d.qk_rope_head_dim), 8);
  const RopeArgs args{.inv_freq = inv_freq, .positions = positions, .dims = d, .llama4_beta = 0.1f,
                      .llama4_original_max_position_embeddings = 8192};
  Tensor qd = up(q, {T, d.q_width()}), kd = up(k, {T, d.qk_rope_head_dim});
  Tensor q_alone = up(q, {T, d.q_width()}), k_alone = up(k, {T, d.qk_rope_head_dim});
  gpu_->rope(qd, kd, args);
  gpu_->rope(q_alone, Tensor{}, args);
  gpu_->rope(Tensor{}, k_alone, args);
  cpu_.rope(host(q, {T, d.q_width()}), host(k, {T, d.qk_rope_head_dim}), args);
  EXPECT_LE(rel_l2(down(qd), q), 1e-6);
  EXPECT_LE(rel_l2(down(kd), k), 1e-6);
  EXPECT_EQ(down(q_alone), down(qd)) << "q without k_rope";
  EXPECT_EQ(down(k_alone), down(kd)) << "k_rope without q";
}

// An op that takes two uploads (rope: frequencies, positions) where the first is reused from an earlier op and the
// second wraps the staging ring: the wrap must not write over the first. The fills are sized for the 16 MiB ring
// (kRingBytes): fill it to the end, rope (wraps: both at the front), fill to the end again, rope with the same
// frequencies buffer (reusable at the front) and new positions (wraps onto the front).
TEST_F(CudaOps, AnUploadThatWrapsTheRingKeepsTheOpsEarlierUploads) {
  constexpr size_t kRing = size_t{16} << 20;
  const io::TextConfig text = io::preset("mistral-small-4").text;
  const MlaDims d{.n_heads = 2, .kv_lora_rank = 16, .qk_nope_head_dim = 8, .qk_rope_head_dim = text.qk_rope_head_dim,
                  .v_head_dim = 8};
  const std::vector<float> inv_freq = model::rope_inv_freq(text);
  ASSERT_LE(inv_freq.size() * 4, 256u);
  std::vector<float> one = {1.0f};
  const Tensor xd = up(one, {1, 1});
  const auto fill = [&](size_t bytes) { (void)gpu_->gather_rows(xd, std::vector<int32_t>(bytes / 4, 0), *dev_arena_); };
  const auto rope_matches = [&](const std::vector<int32_t>& positions, int seed) {
    const int64_t T = static_cast<int64_t>(positions.size());
    std::vector<float> q = randn(static_cast<size_t>(T * d.q_width()), seed);
    std::vector<float> k = randn(static_cast<size_t>(T * d.qk_rope_head_dim), seed + 1);
    const RopeArgs args{.inv_freq = inv_freq, .positions = positions, .dims = d, .llama4_beta = 0.1f,
                        .llama4_original_max_position_embeddings = 8192};
    Tensor qd = up(q, {T, d.q_width()}), kd = up(k, {T, d.qk_rope_head_dim});
    gpu_->rope(qd, kd, args);
    cpu_.rope(host(q, {T, d.q_width()}), host(k, {T, d.qk_rope_head_dim}), args);
    EXPECT_LE(rel_l2(down(qd), q), 1e-6) << "seed " << seed;
    EXPECT_LE(rel_l2(down(kd), k), 1e-6) << "seed " << seed;
  };
  fill(kRing);
  rope_matches({3, 4, 900}, 11);
  fill(kRing - 512);
  rope_matches({70000, 5, 131071}, 13);
}

// Two sequences in scattered blocks of a NaN-poisoned cache, written through kv_write; tokens interleaved.
// Every cache dtype: the stores are bit-exact with the CPU's rounding, attention reads the same values.
class CudaKv : public CudaOps, public testing::WithParamInterface<DType> {};

TEST_P(CudaKv, KvWriteThenMlaMatchesCpuInBothForms) {
  const DType kv_dtype = GetParam();
  const MlaDims d{.n_heads = 10, .kv_lora_rank = 64, .qk_nope_head_dim = 16, .qk_rope_head_dim = 8, .v_head_dim = 24};  // 8 + 2 heads
  const int64_t block_size = 4, n_blocks = 12, W = d.cache_width();
  const size_t n_cache = static_cast<size_t>(n_blocks * block_size * W), cache_bytes = n_cache * dtype_size(kv_dtype);
  std::vector<float> poison((cache_bytes + 3) / 4, std::numeric_limits<float>::quiet_NaN());  // as KvCache poisons
  std::vector<std::byte> cache(cache_bytes);
  std::memcpy(cache.data(), poison.data(), cache_bytes);
  const std::vector<int32_t> tables = {7, 2, 10, 4, 0, -1};
  std::vector<int64_t> slots;
  for (int s = 0; s < 2; ++s) {
    for (int64_t j = 0; j < (s == 0 ? 9 : 5); ++j) {
      slots.push_back(tables[static_cast<size_t>(s * 3 + j / block_size)] * block_size + j % block_size);
    }
  }
  const int64_t S = static_cast<int64_t>(slots.size());
  std::vector<float> c = randn(static_cast<size_t>(S * d.kv_lora_rank), 20), kr = randn(static_cast<size_t>(S * d.qk_rope_head_dim), 21);
  Tensor cache_d(dev_arena_->allocate(cache_bytes), kv_dtype, {n_blocks, block_size, W}, Device::kCuda);
  ASSERT_EQ(cudaMemcpy(cache_d.data(), cache.data(), cache_bytes, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // see up()
  const Tensor cache_h(cache.data(), kv_dtype, {n_blocks, block_size, W});
  gpu_->kv_write(cache_d, up(c, {S, d.kv_lora_rank}), up(kr, {S, d.qk_rope_head_dim}), slots);
  cpu_.kv_write(cache_h, host(c, {S, d.kv_lora_rank}), host(kr, {S, d.qk_rope_head_dim}), slots);
  std::vector<std::byte> cache_back(cache_bytes);
  gpu_->copy_to_host(cache_d, cache_back.data());
  EXPECT_EQ(std::memcmp(cache_back.data(), cache.data(), cache_bytes), 0) << "kv_write (NaNs included)";

  const std::vector<int32_t> seq = {0, 1, 0, 1, 0}, ctx = {7, 4, 8, 5, 9};
  std::vector<int64_t> own;
  const AttnMeta meta{.positions = {}, .seq_index = seq, .context_lens = ctx, .slots = own, .block_tables = tables,
                      .max_blocks_per_seq = 3};
  const int64_t T = 5;
  std::vector<float> q = randn(static_cast<size_t>(T * d.q_width()), 22);
  for (DType dtype : {DType::BF16, DType::F8_E4M3}) {
    const StoredWeight kv_b = random_kv_b(d, dtype, 23, 0.2f, 0.003f);
    const Weight kv_b_d = prep(kv_b);
    for (MlaForm form : {MlaForm::kNaive, MlaForm::kAbsorbed}) {
      MlaArgs a{.q = host(q, {T, d.q_width()}), .kv_cache = cache_h, .kv_b = kv_b.weight,
                .meta = &meta, .dims = d, .softmax_scale = 0.17f, .form = form};
      const std::vector<float> want = vec(cpu_.mla_attention(a, host_arena_));
      a.q = up(q, {T, d.q_width()});
      a.kv_cache = cache_d;
      a.kv_b = kv_b_d;
      EXPECT_LE(rel_l2(down(gpu_->mla_attention(a, *dev_arena_)), want), kF32RelL2)
          << dtype_name(dtype) << (form == MlaForm::kNaive ? " naive" : " absorbed") << ", cache " << dtype_name(kv_dtype);
    }
  }
}

// The fused step (q's RoPE, the latent's RMSNorm, k_rope's RoPE, the store) against the CPU's composed ops, in every
// cache dtype, at the model's widths, positions far apart, scattered slots; the slots not written stay as they were.
// BF16/FP8 stores may round the last bit the other way (the sum of squares in another order): each value within
// one step of the cache dtype of the CPU's. q is rotated as the CPU's rope does.
TEST_P(CudaKv, RopeKvWriteMatchesCpu) {
  const DType kv_dtype = GetParam();
  const io::TextConfig text = io::preset("mistral-small-4").text;
  const MlaDims d{.n_heads = 4, .kv_lora_rank = text.kv_lora_rank, .qk_nope_head_dim = 8,
                  .qk_rope_head_dim = text.qk_rope_head_dim, .v_head_dim = 8};
  const int64_t T = 5, W = d.cache_width(), n_slots = 16;
  const std::vector<float> inv_freq = model::rope_inv_freq(text);
  const std::vector<int32_t> positions = {0, 3, 8191, 70000, 131071};
  const std::vector<int64_t> slots = {9, 0, 15, 4, 5};
  std::vector<float> kv_a = randn(static_cast<size_t>(T * W), 30, 3.0f), gamma = randn(static_cast<size_t>(d.kv_lora_rank), 31, 0.1f);
  for (float& v : gamma) v += 1.0f;
  std::vector<float> q = randn(static_cast<size_t>(T * d.q_width()), 32);
  const StoredWeight g(gamma, {d.kv_lora_rank}, DType::BF16);
  const size_t cache_bytes = static_cast<size_t>(n_slots * W) * dtype_size(kv_dtype);
  std::vector<std::byte> cache(cache_bytes, std::byte{0x3f});
  Tensor cache_d(dev_arena_->allocate(cache_bytes), kv_dtype, {n_slots / 4, 4, W}, Device::kCuda);
  ASSERT_EQ(cudaMemcpy(cache_d.data(), cache.data(), cache_bytes, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // see up()
  const RopeArgs args{.inv_freq = inv_freq, .positions = positions, .dims = d, .llama4_beta = 0.1f,
                      .llama4_original_max_position_embeddings = 8192};
  Tensor qd = up(q, {T, d.q_width()});
  gpu_->rope_kv_write(qd, cache_d, up(kv_a, {T, W}), prep(g), 1e-6f, args, slots, *dev_arena_);
  cpu_.rope_kv_write(host(q, {T, d.q_width()}), Tensor(cache.data(), kv_dtype, {n_slots / 4, 4, W}), host(kv_a, {T, W}),
                     g.weight, 1e-6f, args, slots, host_arena_);
  EXPECT_LE(rel_l2(down(qd), q), 1e-6) << "q";
  std::vector<std::byte> back(cache_bytes);
  gpu_->copy_to_host(cache_d, back.data());
  const double step = kv_dtype == DType::F32 ? 1e-6 : kv_dtype == DType::BF16 ? 1.0 / 128 : 1.0 / 8;
  for (size_t i = 0; i < static_cast<size_t>(n_slots * W); ++i) {
    const float got = load_as_f32(back.data(), kv_dtype, i), want = load_as_f32(cache.data(), kv_dtype, i);
    ASSERT_LE(std::abs(got - want), step * std::abs(want) + 1e-6) << "element " << i << " (slot " << i / W << ")";
  }
}

// A prompt (64 tokens or more) ropes each token's query heads in one block, the angles computed once: the same q and
// cache bytes, bit for bit, as token by token (a block a head), at the model's head sizes, with the temperature.
TEST_F(CudaOps, RopeKvWriteOfAPromptIsItsTokensOneByOne) {
  const io::TextConfig text = io::preset("mistral-small-4").text;
  const MlaDims d{.n_heads = 32, .kv_lora_rank = text.kv_lora_rank, .qk_nope_head_dim = text.qk_nope_head_dim,
                  .qk_rope_head_dim = text.qk_rope_head_dim, .v_head_dim = text.v_head_dim};
  const int64_t T = 70, W = d.cache_width(), n_slots = 72;
  const std::vector<float> inv_freq = model::rope_inv_freq(text);
  std::vector<int32_t> positions(static_cast<size_t>(T));
  std::vector<int64_t> slots(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    positions[static_cast<size_t>(t)] = static_cast<int32_t>((t * 1877) % 131072);
    slots[static_cast<size_t>(t)] = (t * 5) % n_slots;  // 5 and 72 coprime: distinct
  }
  const std::vector<float> kv_a = randn(static_cast<size_t>(T * W), 40, 3.0f), q = randn(static_cast<size_t>(T * d.q_width()), 41);
  std::vector<float> gamma = randn(static_cast<size_t>(d.kv_lora_rank), 42, 0.1f);
  for (float& v : gamma) v += 1.0f;
  const StoredWeight g(gamma, {d.kv_lora_rank}, DType::BF16);
  const Weight gd = prep(g);
  const size_t cache_bytes = static_cast<size_t>(n_slots * W) * dtype_size(DType::BF16);
  const auto run = [&](bool one_by_one, std::vector<std::byte>& cache_out) {
    Tensor cache_d(dev_arena_->allocate(cache_bytes), DType::BF16, {n_slots / 4, 4, W}, Device::kCuda);
    EXPECT_EQ(cudaMemset(cache_d.data(), 0, cache_bytes), cudaSuccess);
    Tensor qd = up(q, {T, d.q_width()});
    const Tensor kv_d = up(kv_a, {T, W});
    for (int64_t t0 = 0; t0 < T; t0 += one_by_one ? 1 : T) {
      const int64_t n = one_by_one ? 1 : T;
      const RopeArgs args{.inv_freq = inv_freq, .positions = std::span(positions).subspan(static_cast<size_t>(t0), static_cast<size_t>(n)),
                          .dims = d, .llama4_beta = 0.1f, .llama4_original_max_position_embeddings = 8192};
      gpu_->rope_kv_write(qd.rows(t0, n), cache_d, kv_d.rows(t0, n), gd, 1e-6f, args,
                          std::span(slots).subspan(static_cast<size_t>(t0), static_cast<size_t>(n)), *dev_arena_);
    }
    cache_out.resize(cache_bytes);
    gpu_->copy_to_host(cache_d, cache_out.data());
    return down(qd);
  };
  std::vector<std::byte> cache_whole, cache_tokens;
  const std::vector<float> whole = run(false, cache_whole), tokens = run(true, cache_tokens);
  EXPECT_EQ(whole, tokens);
  EXPECT_TRUE(cache_whole == cache_tokens);
  EXPECT_GT(rel_l2(whole, q), 1e-2) << "q must be rotated and scaled";
}

INSTANTIATE_TEST_SUITE_P(CacheDtypes, CudaKv, testing::Values(DType::F32, DType::BF16, DType::F8_E4M3),
                         [](const testing::TestParamInfo<DType>& p) { return std::string(dtype_name(p.param)); });

// Few tokens over a long context: the absorbed kernel splits the keys over several blocks and combines them.
TEST_F(CudaOps, MlaWithKeysSplitOverBlocksMatchesCpu) {
  const MlaDims d{.n_heads = 10, .kv_lora_rank = 256, .qk_nope_head_dim = 32, .qk_rope_head_dim = 16, .v_head_dim = 40};
  const int64_t block_size = 16, n_blocks = 24, W = d.cache_width(), S = 300;
  std::vector<int32_t> tables(20);
  for (int32_t b = 0; b < 20; ++b) tables[static_cast<size_t>(b)] = (7 * b + 3) % n_blocks;  // scattered
  std::vector<float> cache(static_cast<size_t>(n_blocks * block_size * W), std::numeric_limits<float>::quiet_NaN());
  const std::vector<float> rows = randn(static_cast<size_t>(S * W), 60);
  for (int64_t j = 0; j < S; ++j) {
    const int64_t slot = tables[static_cast<size_t>(j / block_size)] * block_size + j % block_size;
    std::copy_n(rows.begin() + j * W, W, cache.begin() + slot * W);
  }
  const std::vector<int32_t> seq = {0, 0}, ctx = {299, 300};
  const std::vector<int64_t> own;
  const AttnMeta meta{.seq_index = seq, .context_lens = ctx, .slots = own, .block_tables = tables, .max_blocks_per_seq = 20};
  ASSERT_GT(mla_splits(2, d.n_heads, d.kv_lora_rank, d.qk_rope_head_dim, false, WType::kF32, 300), 1) << "the case must exercise the split";
  std::vector<float> q = randn(static_cast<size_t>(2 * d.q_width()), 61);
  const StoredWeight kv_b = random_kv_b(d, DType::F8_E4M3, 62, 0.1f, 0.001f);
  MlaArgs a{.q = host(q, {2, d.q_width()}), .kv_cache = host(cache, {n_blocks, block_size, W}), .kv_b = kv_b.weight,
            .meta = &meta, .dims = d, .softmax_scale = 0.09f, .form = MlaForm::kAbsorbed};
  const std::vector<float> want = vec(cpu_.mla_attention(a, host_arena_));
  a.q = up(q, {2, d.q_width()});
  a.kv_cache = up(cache, {n_blocks, block_size, W});
  a.kv_b = prep(kv_b);
  EXPECT_LE(rel_l2(down(gpu_->mla_attention(a, *dev_arena_)), want), kF32RelL2);
}

// 9 tokens (36 pairs): routed and grouped in one launch; 33 (132 pairs): the route kernel alone.
TEST_F(CudaOps, RouteMatchesCpuIncludingTies) {
  const int64_t E = 16, K = 4;
  for (int64_t T : {9, 33}) {
    std::vector<float> logits = randn(static_cast<size_t>(T * E), 30);
    for (int64_t e = 0; e < E; ++e) logits[static_cast<size_t>(E + e)] = 1.0f;  // token 1: all tied
    logits[2 * E + 3] = logits[2 * E + 9] = 5.0f;                               // token 2: a tie on top
    const RouteArgs args{.n_experts_per_tok = K, .routed_scaling_factor = 1.5f};
    const Routing want = cpu_.route(host(logits, {T, E}), args, host_arena_);
    const Routing got = gpu_->route(up(logits, {T, E}), args, *dev_arena_);
    EXPECT_EQ(got.grouping.is_defined(), T == 9) << "T=" << T;
    std::vector<int32_t> ids(static_cast<size_t>(T * K));
    gpu_->copy_to_host(got.expert_ids, ids.data());
    EXPECT_EQ(ids, std::vector<int32_t>(want.expert_ids.data_as<int32_t>(), want.expert_ids.data_as<int32_t>() + T * K))
        << "T=" << T;
    EXPECT_LE(rel_l2(down(got.gates), vec(want.gates)), 1e-6) << "T=" << T;
  }
}

TEST_F(CudaOps, FfnAndMoeMatchCpuOnBothGroupSizes) {
  const int64_t D = 64, F = 48, E = 6, K = 2;
  for (DType dtype : {DType::BF16, DType::F8_E4M3}) {
    const auto ex = experts(E + 1, D, F, dtype);  // the last is the shared expert
    const RoutedAndShared both(ex, *gpu_);
    // T*K <= 16*E: groups of 8 rows (24: some full); 140 > 96: groups of 64. T = 7, 24: rows_hint >= 2, the small
    // tensor-core kernel on groups of 2-8 real rows and padding rows (gate+up in one launch, down with the gates as
    // row scale); T = 7 with the shared expert: its down accumulates into y on the same kernel (7 rows).
    for (int64_t T : {1, 7, 24, 70}) {
      const Routed in = routed(T, D, E, K, static_cast<uint64_t>(40 + T), static_cast<uint64_t>(50 + T));
      const Tensor &xc = in.xc, &xg = in.xg;
      const Routing &rc = in.rc, &rg = in.rg;
      EXPECT_LE(rel_l2(down(gpu_->ffn(xg, both.dev[E], *dev_arena_)), vec(cpu_.ffn(xc, ex.ffn[E], host_arena_))), kF32RelL2)
          << "ffn " << dtype_name(dtype);
      for (bool shared : {false, true}) {
        const std::vector<float> want = vec(cpu_.moe({.x = xc, .routing = rc, .experts = both.cpu_routed,
                                                      .shared = shared ? &ex.ffn[E] : nullptr}, host_arena_));
        const std::vector<float> got = down(gpu_->moe({.x = xg, .routing = rg, .experts = both.gpu_routed,
                                                      .shared = shared ? &both.dev[E] : nullptr}, *dev_arena_));
        EXPECT_LE(rel_l2(got, want), kF32RelL2) << "moe " << dtype_name(dtype) << " T=" << T << " shared=" << shared;
        // The route grouped these pairs in its launch (T*K <= 64); without its grouping moe groups them itself:
        // each row's result is independent of its place in a group, so the same bits.
        ASSERT_EQ(rg.grouping.is_defined(), T * K <= 64) << "T=" << T;
        const Routing bare{.expert_ids = rg.expert_ids, .gates = rg.gates};
        EXPECT_EQ(down(gpu_->moe({.x = xg, .routing = bare, .experts = both.gpu_routed,
                                  .shared = shared ? &both.dev[E] : nullptr}, *dev_arena_)), got)
            << "moe grouping itself, T=" << T;
        // Into a residual (the sum kernel adds): the residual plus the same values, bit for bit.
        const std::vector<float> r0 = randn(static_cast<size_t>(T * D), static_cast<uint64_t>(60 + T));
        const Tensor res = up(r0, {T, D});
        const Tensor out = gpu_->moe({.x = xg, .routing = rg, .experts = both.gpu_routed,
                                      .shared = shared ? &both.dev[E] : nullptr, .residual = &res}, *dev_arena_);
        EXPECT_EQ(out.data(), res.data());
        const std::vector<float> sum = down(res);
        for (size_t i = 0; i < sum.size(); ++i) ASSERT_EQ(sum[i], r0[i] + got[i]) << "moe residual T=" << T << " " << i;
      }
    }
  }
}

TEST_F(CudaOps, ABranchRunsBesideTheMainOpsAndJoinsThem) {
  // An FFN in a branch (the side stream), another on the main stream, then an add of both after join_branch:
  // each the CPU's values, the sum twice them; the shared-expert path of moe() (above) runs as such a branch too.
  const int64_t M = 3, D = 64, F = 48;
  const auto ex = experts(1, D, F, DType::F8_E4M3);
  const std::vector<FfnWeights> dev_ffn = ex.on(*gpu_);
  std::vector<float> x = randn(static_cast<size_t>(M * D), 70);
  const std::vector<float> want = vec(cpu_.ffn(host(x, {M, D}), ex.ffn[0], host_arena_));
  const Tensor xg = up(x, {M, D});
  BranchScope branch(*gpu_);
  const Tensor side = gpu_->ffn(xg, dev_ffn[0], *dev_arena_);
  branch.end();
  const Tensor main = gpu_->ffn(xg, dev_ffn[0], *dev_arena_);
  gpu_->join_branch();
  gpu_->add_to(main, side);
  std::vector<float> twice = want;
  for (float& v : twice) v *= 2.0f;
  EXPECT_LE(rel_l2(down(side), want), kF32RelL2);
  EXPECT_LE(rel_l2(down(main), twice), kF32RelL2);
  // matmul_add adds in the matmul's store: the same values as add_to(y, matmul(x, w)), bit for bit.
  const std::vector<float> y0 = randn(static_cast<size_t>(M * F), 71);
  const Tensor y = up(y0, {M, F});
  gpu_->matmul_add(y, xg, dev_ffn[0].gate, *dev_arena_);
  const std::vector<float> prod = down(gpu_->matmul(xg, dev_ffn[0].gate, *dev_arena_)), sum = down(y);
  for (size_t i = 0; i < sum.size(); ++i) ASSERT_EQ(sum[i], y0[i] + prod[i]) << "matmul_add " << i;
  // (Misuse, a branch in a branch or an upload inside one, is a CHECK failure: a bug, not bad input.)
}

TEST_F(CudaOps, BadInputIsAnErrorNotACrash) {
  const StoredWeight table(randn(4 * 8, 3), {4, 8}, DType::BF16);
  const Weight t = prep(table);
  const std::vector<int32_t> bad = {4};
  EXPECT_THROW(gpu_->embed(bad, t, *dev_arena_), std::exception);
  std::vector<float> x = randn(2 * 8, 1);
  EXPECT_THROW(gpu_->matmul(host(x, {2, 8}), t, *dev_arena_), std::exception) << "host activations";
  EXPECT_THROW(gpu_->matmul(up(x, {2, 8}), table.weight, *dev_arena_), std::exception) << "unprepared weight";
  Tensor cache = dev_arena_->tensor(DType::F32, {2, 2, 5});
  const std::vector<int64_t> slots = {4};
  std::vector<float> c(3), k(2);
  EXPECT_THROW(gpu_->kv_write(cache, up(c, {1, 3}), up(k, {1, 2}), slots), std::exception) << "slot 4 of 4";
  // The backend still works after the errors.
  EXPECT_EQ(down(gpu_->embed(std::vector<int32_t>{3}, t, *dev_arena_)), vec(cpu_.embed(std::vector<int32_t>{3}, table.weight, host_arena_)));
}

TEST_F(CudaOps, RandomWeightsHaveTheRequestedSpread) {
  for (DType dtype : {DType::BF16, DType::F8_E4M3}) {
    const std::vector<int64_t> shape = {256, 512};
    const Weight w = gpu_->random_weight(dtype, shape, 0.02f, 7);
    // Dequantised through the embedding op: every row.
    std::vector<int32_t> rows(256);
    for (int32_t i = 0; i < 256; ++i) rows[static_cast<size_t>(i)] = i;
    const std::vector<float> v = down(gpu_->embed(rows, w, *dev_arena_));
    double s = 0, s2 = 0;
    for (float f : v) s += f, s2 += static_cast<double>(f) * f;
    const double mean = s / static_cast<double>(v.size()), sd = std::sqrt(s2 / static_cast<double>(v.size()) - mean * mean);
    EXPECT_NEAR(mean, 0.0, 1e-3) << dtype_name(dtype);
    EXPECT_NEAR(sd, 0.02, 0.002) << dtype_name(dtype);
    EXPECT_NE(gpu_->random_weight(dtype, shape, 0.02f, 8).w.data(), w.w.data());
  }
}

// The decode path at the model's MLA dims (32 heads, R = 256, Dn = Dr = 64, Dv = 128), at 40 heads (two head blocks
// of the tensor-core key pass, the second 8 heads of 32) with R = 64, Dr = 16 and q rows of 34 floats (its
// one-float q loads), and at dims the tiled kernel does not take (R + Dr not a multiple of 4: the per-head kernel):
// 1, 2, 3 and 37 tokens (q_abs: the one-or-two-token kernel, then the one taking 32 tokens a block) of three
// sequences with contexts 1, 33 and 700 in one step, so that the short ones leave key splits empty and the long one
// fills key tiles (of 16, 32 and 64 on the tensor cores) and ends in a partial one; a NaN-poisoned cache in scattered
// blocks of 16, written through kv_write, in every cache dtype (BF16 and FP8 on the tensor cores, F32 on the CUDA
// cores); kv_b in BF16 and FP8.
// q and P rounded to BF16 (8 significant bits: 2^-9 relative each), summed over hundreds of keys.
constexpr double kBf16OperandsRelL2 = 5e-3;

TEST_F(CudaOps, MlaDecodeAtModelDimsMatchesCpu) {
  struct Case {
    MlaDims d;
    bool is_tiled;
  };
  const Case cases[] = {{{.n_heads = 32, .kv_lora_rank = 256, .qk_nope_head_dim = 64, .qk_rope_head_dim = 64, .v_head_dim = 128}, true},
                        {{.n_heads = 40, .kv_lora_rank = 64, .qk_nope_head_dim = 18, .qk_rope_head_dim = 16, .v_head_dim = 24}, true},
                        {{.n_heads = 3, .kv_lora_rank = 64, .qk_nope_head_dim = 8, .qk_rope_head_dim = 6, .v_head_dim = 24}, false}};
  const char* tc_env = std::getenv("QUATRE_CUDA_MLA_TC");  // =0: the A/B switch back to the CUDA-core key pass
  const bool tc_on = tc_env == nullptr || std::string(tc_env) != "0";
  const int64_t block_size = 16, n_blocks = 64, max_blocks = 44;
  if (std::getenv("QUATRE_CUDA_MLA_TC_KEYS") == nullptr) {  // the heuristic: small tiles where blocks are few
    EXPECT_EQ(mla_attend_tc_tile_keys(1, 32, max_blocks * block_size), 16);
    EXPECT_EQ(mla_attend_tc_tile_keys(1, 32, 16384), 32);
    EXPECT_EQ(mla_attend_tc_tile_keys(1, 32, 32768), 64);
    EXPECT_EQ(mla_attend_tc_tile_keys(37, 32, max_blocks * block_size), 64);
  }
  const int32_t context[3] = {1, 33, 700};
  std::vector<int32_t> tables(3 * max_blocks, -1);
  int32_t next = 0;
  for (int s = 0; s < 3; ++s) {
    for (int32_t b = 0; b < (context[s] + block_size - 1) / block_size; ++b) {
      tables[static_cast<size_t>(s * max_blocks + b)] = (37 * next++ + 11) % n_blocks;  // scattered, distinct
    }
  }
  uint64_t seed = 100;
  for (const Case& c : cases) {
    const MlaDims& d = c.d;
    const int64_t W = d.cache_width(), R = d.kv_lora_rank, Dr = d.qk_rope_head_dim;
    std::vector<int64_t> slots;
    for (int s = 0; s < 3; ++s) {
      for (int32_t j = 0; j < context[s]; ++j) {
        slots.push_back(tables[static_cast<size_t>(s * max_blocks + j / block_size)] * block_size + j % block_size);
      }
    }
    const int64_t S = static_cast<int64_t>(slots.size());
    std::vector<float> lat = randn(static_cast<size_t>(S * R), ++seed), kr = randn(static_cast<size_t>(S * Dr), ++seed);
    for (DType kv_dtype : {DType::F32, DType::BF16, DType::F8_E4M3}) {
      const size_t cache_bytes = static_cast<size_t>(n_blocks * block_size * W) * dtype_size(kv_dtype);
      std::vector<float> poison((cache_bytes + 3) / 4, std::numeric_limits<float>::quiet_NaN());
      std::vector<std::byte> cache(cache_bytes);
      std::memcpy(cache.data(), poison.data(), cache_bytes);
      Tensor cache_d(dev_arena_->allocate(cache_bytes), kv_dtype, {n_blocks, block_size, W}, Device::kCuda);
      ASSERT_EQ(cudaMemcpy(cache_d.data(), cache.data(), cache_bytes, cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // see up()
      const Tensor cache_h(cache.data(), kv_dtype, {n_blocks, block_size, W});
      gpu_->kv_write(cache_d, up(lat, {S, R}), up(kr, {S, Dr}), slots);
      cpu_.kv_write(cache_h, host(lat, {S, R}), host(kr, {S, Dr}), slots);
      EXPECT_EQ(mla_is_tiled(R, Dr, false, cache_d.data()), c.is_tiled);
      const WType cache_type = kv_dtype == DType::F32 ? WType::kF32 : kv_dtype == DType::BF16 ? WType::kBF16 : WType::kF8E4M3;
      EXPECT_EQ(mla_attend_is_tc(R, Dr, false, cache_type), c.is_tiled && kv_dtype != DType::F32 && tc_on)
          << "H=" << d.n_heads << " cache " << dtype_name(kv_dtype);
      for (int64_t T : {1, 2, 3, 37}) {
        std::vector<int32_t> seq(static_cast<size_t>(T)), ctx(static_cast<size_t>(T));
        for (int64_t t = 0; t < T; ++t) {  // T = 1: the long sequence alone, the split path at its widest
          const int s = T == 1 ? 2 : static_cast<int>((t * 7) % 3);
          seq[static_cast<size_t>(t)] = s;
          ctx[static_cast<size_t>(t)] = context[s] - static_cast<int32_t>(t / 3) % std::min(context[s], 5);
        }
        const std::vector<int64_t> own;
        const AttnMeta meta{.seq_index = seq, .context_lens = ctx, .slots = own, .block_tables = tables,
                            .max_blocks_per_seq = static_cast<int32_t>(max_blocks)};
        std::vector<float> q = randn(static_cast<size_t>(T * d.q_width()), ++seed);
        // kv_b BF16, FP8, and F32 beside the F32 cache (a 4-bit kv_b's dequantised copy is F32).
        const DType kvb_dtype = kv_dtype == DType::BF16 ? DType::BF16 : kv_dtype == DType::F32 ? DType::F32 : DType::F8_E4M3;
        const StoredWeight kv_b = random_kv_b(d, kvb_dtype, ++seed, 0.1f, 0.001f);
        MlaArgs a{.q = host(q, {T, d.q_width()}), .kv_cache = cache_h, .kv_b = kv_b.weight, .meta = &meta, .dims = d,
                  .softmax_scale = 0.07f, .form = MlaForm::kAbsorbed};
        const std::vector<float> want = cpu_mla_then_device_args(a, q, cache_d, kv_b);
        // The tensor-core pass at each key-tile size (0: the heuristic's, 16 at T = 1-3, 64 at T = 37).
        const ResetKernelSwitches reset;
        for (int keys : {0, 16, 32, 64}) {
          if (keys != 0 && !mla_attend_is_tc(R, Dr, false, cache_type)) break;
          set_mla_tc_keys_for_tests(keys);
          const std::vector<float> got = down(gpu_->mla_attention(a, *dev_arena_));
          EXPECT_LE(rel_l2(got, want), kF32RelL2)
              << "H=" << d.n_heads << " R=" << R << " T=" << T << " cache " << dtype_name(kv_dtype) << " kv_b "
              << dtype_name(kvb_dtype) << " tile keys " << (keys == 0 ? mla_attend_tc_tile_keys(T, d.n_heads, max_blocks * block_size) : keys);
          if (keys >= 32) {  // the two warps of a head block each computing every score: the same sums, the same bits
            for (bool bf16 : {false, true}) {
              MlaArgs b = a;
              b.bf16_operands = bf16;
              set_mla_split_scores_for_tests(1);
              const std::vector<float> split = down(gpu_->mla_attention(b, *dev_arena_));
              set_mla_split_scores_for_tests(0);
              EXPECT_EQ(down(gpu_->mla_attention(b, *dev_arena_)), split)
                  << "scores split and not, tile keys " << keys << (bf16 ? ", bf16 operands" : "");
            }
            set_mla_split_scores_for_tests(-1);
          }
        }
        // Both combines meet the CPU at every T: a block per (token, head, 32 columns) (the default below 16 tokens)
        // and a block per (head, 16 tokens) (from 16).
        set_mla_tc_keys_for_tests(0);
        for (int combine : {0, 1}) {
          set_mla_combine_tokens_for_tests(combine);
          EXPECT_LE(rel_l2(down(gpu_->mla_attention(a, *dev_arena_)), want), kF32RelL2)
              << "combine " << (combine == 1 ? "a block per 16 tokens" : "a block per token") << ", H=" << d.n_heads
              << " T=" << T << " cache " << dtype_name(kv_dtype);
        }
        set_mla_combine_tokens_for_tests(-1);
        // Launched as dependents (pdl.cuh), behind a kernel that writes q (an add into zeros, which lets them start):
        // the same bits. q_abs (one or two tokens) loads W_UK and the combine W_UV early; one reading q early would
        // see zeros. (q_abs follows the add directly because the step's tables are uploaded once, above: a copy
        // between them would serialise the two and leave only the combine's early loads tested.)
        set_mla_tc_keys_for_tests(0);
        set_pdl_for_tests(0);
        const std::vector<float> plain = down(gpu_->mla_attention(a, *dev_arena_));
        set_pdl_for_tests(1);
        const Tensor q_late = up(std::vector<float>(q.size(), 0.0f), {T, d.q_width()});
        gpu_->add_to(q_late, a.q);
        MlaArgs late = a;
        late.q = q_late;
        EXPECT_EQ(down(gpu_->mla_attention(late, *dev_arena_)), plain) << "as dependents, H=" << d.n_heads << " T=" << T;
        // BF16 operands (MlaArgs::bf16_operands): the tensor-core pass with q and P rounded, one mma a product, is
        // within BF16 rounding of the fp32 result and not equal to it; the other paths keep fp32 (the same bits).
        set_pdl_for_tests(-1);
        MlaArgs rounded = a;
        rounded.bf16_operands = true;
        const std::vector<float> got = down(gpu_->mla_attention(rounded, *dev_arena_));
        if (mla_attend_is_tc(R, Dr, false, cache_type)) {
          EXPECT_LE(rel_l2(got, want), kBf16OperandsRelL2) << "bf16 operands, H=" << d.n_heads << " T=" << T;
          EXPECT_GT(rel_l2(got, plain), 1e-7) << "bf16 operands change the bits, H=" << d.n_heads << " T=" << T;
        } else {
          EXPECT_EQ(got, plain) << "bf16 operands off the tensor cores, H=" << d.n_heads << " T=" << T;
        }
      }
    }
  }
}

// A long context at batch 1 (20,000 keys at the model's MLA dims, two tokens of one sequence): the tensor-core key
// pass splits it into more than 64 splits (both combines take up to 256), the CUDA-core one (F32 cache) into 64.
TEST_F(CudaOps, MlaLongContextOverManySplitsMatchesCpu) {
  const MlaDims d{.n_heads = 32, .kv_lora_rank = 256, .qk_nope_head_dim = 64, .qk_rope_head_dim = 64, .v_head_dim = 128};
  const int64_t block_size = 64, n_blocks = 320, R = d.kv_lora_rank, Dr = d.qk_rope_head_dim;
  const int32_t context = 20000;
  std::vector<int32_t> tables(static_cast<size_t>(n_blocks));
  for (int32_t b = 0; b < n_blocks; ++b) tables[static_cast<size_t>(b)] = (97 * b + 5) % n_blocks;  // scattered
  std::vector<int64_t> slots;
  for (int32_t j = 0; j < context; ++j) slots.push_back(tables[static_cast<size_t>(j / block_size)] * block_size + j % block_size);
  const int64_t S = context;
  std::vector<float> lat = randn(static_cast<size_t>(S * R), 301), kr = randn(static_cast<size_t>(S * Dr), 302);
  const std::vector<int32_t> seq = {0, 0}, ctx = {context - 1, context};
  const std::vector<int64_t> own;
  const AttnMeta meta{.seq_index = seq, .context_lens = ctx, .slots = own, .block_tables = tables,
                      .max_blocks_per_seq = static_cast<int32_t>(n_blocks)};
  std::vector<float> q = randn(static_cast<size_t>(2 * d.q_width()), 303);
  const StoredWeight kv_b = random_kv_b(d, DType::BF16, 304, 0.1f, 0.001f);
  for (DType kv_dtype : {DType::BF16, DType::F8_E4M3, DType::F32}) {
    const WType cache_type = kv_dtype == DType::F32 ? WType::kF32 : kv_dtype == DType::BF16 ? WType::kBF16 : WType::kF8E4M3;
    const int splits = mla_splits(2, d.n_heads, R, Dr, false, cache_type, n_blocks * block_size);
    if (mla_attend_is_tc(R, Dr, false, cache_type)) {
      EXPECT_GT(splits, 64) << dtype_name(kv_dtype);
    } else {
      EXPECT_EQ(splits, 64) << dtype_name(kv_dtype);
    }
    const BothCaches cache = written_caches(kv_dtype, n_blocks, block_size, d, lat, kr, slots);
    MlaArgs a{.q = host(q, {2, d.q_width()}), .kv_cache = cache.host, .kv_b = kv_b.weight, .meta = &meta, .dims = d,
              .softmax_scale = 0.07f, .form = MlaForm::kAbsorbed};
    const std::vector<float> want = cpu_mla_then_device_args(a, q, cache.device, kv_b);
    const ResetKernelSwitches reset;
    for (int combine : {-1, 1}) {  // the combine a block a token (two tokens: the default) and per 16 tokens
      set_mla_combine_tokens_for_tests(combine);
      EXPECT_LE(rel_l2(down(gpu_->mla_attention(a, *dev_arena_)), want), kF32RelL2)
          << "cache " << dtype_name(kv_dtype) << " combine " << combine;
    }
  }
}

// Prompt runs in the naive form (mla_prefill.cu: latents gathered, expanded by kv_b, attended with BF16 operands in
// tiles of 64 keys, causal per row) inside a step that also holds decode tokens of other sequences: two runs (one
// behind a 37-entry cached prefix (two blocks of 128 rows), one from the start (warps past its 70 rows)) between
// single tokens, at the model's head sizes and the demo model's. Within BF16 rounding (q, k, v and P rounded) of the
// CPU's fp32 result, row ranges alike, and the runs not the absorbed kernels' bits; 16 rows a warp the bits of 32;
// keys in chunks as close. The cost rule: an 8K-token prompt pays, so does a 512-token chunk behind a 7K-token prefix
// (break-even ~461 tokens), and a 16K one (two chunks of keys); a 256-token one does not.
// k and v rounded to BF16 too (the expansion's fp32 products), four roundings of 2^-9 where the absorbed pass has two.
constexpr double kNaivePrefillRelL2 = 1e-2;

TEST_F(CudaOps, MlaPromptRunsInTheNaiveFormMatchCpu) {
  const MlaDims dims[] = {{.n_heads = 32, .kv_lora_rank = 256, .qk_nope_head_dim = 64, .qk_rope_head_dim = 64, .v_head_dim = 128},
                          {.n_heads = 4, .kv_lora_rank = 32, .qk_nope_head_dim = 16, .qk_rope_head_dim = 32, .v_head_dim = 24}};
  const int64_t block_size = 16, max_blocks = 16, n_seqs = 4, n_blocks = n_seqs * max_blocks;
  // Sequences 0 and 3 decode (contexts 5 and 200); 1 runs tokens 37..186 (150 tokens); 2 runs tokens 0..69.
  std::vector<int32_t> seq, ctx;
  const auto token = [&](int32_t s, int32_t c) { seq.push_back(s), ctx.push_back(c); };
  token(0, 5);
  for (int32_t j = 38; j <= 187; ++j) token(1, j);
  token(3, 200);
  for (int32_t j = 1; j <= 70; ++j) token(2, j);
  token(0, 6);
  const int64_t T = static_cast<int64_t>(seq.size());
  std::vector<int32_t> tables(static_cast<size_t>(n_seqs * max_blocks));
  for (size_t b = 0; b < tables.size(); ++b) tables[b] = static_cast<int32_t>((29 * b + 3) % n_blocks);  // scattered
  std::vector<int64_t> slots;
  for (int64_t s = 0; s < n_seqs; ++s) {
    for (int32_t j = 0; j < max_blocks * block_size; ++j) {
      slots.push_back(tables[static_cast<size_t>(s * max_blocks + j / block_size)] * block_size + j % block_size);
    }
  }
  const int64_t S = static_cast<int64_t>(slots.size());
  const std::vector<int64_t> own;
  const AttnMeta meta{.seq_index = seq, .context_lens = ctx, .slots = own, .block_tables = tables,
                      .max_blocks_per_seq = static_cast<int32_t>(max_blocks)};
  uint64_t seed = 700;
  for (const MlaDims& d : dims) {
    ASSERT_TRUE(mla_prefill_dims_supported(d.qk_nope_head_dim, d.qk_rope_head_dim, d.v_head_dim));
    const int64_t R = d.kv_lora_rank, Dr = d.qk_rope_head_dim;
    std::vector<float> lat = randn(static_cast<size_t>(S * R), ++seed), kr = randn(static_cast<size_t>(S * Dr), ++seed);
    std::vector<float> q = randn(static_cast<size_t>(T * d.q_width()), ++seed);
    for (DType kv_dtype : {DType::BF16, DType::F8_E4M3}) {
      const BothCaches cache = written_caches(kv_dtype, n_blocks, block_size, d, lat, kr, slots);
      const StoredWeight kv_b = random_kv_b(d, kv_dtype, ++seed, 0.1f, 0.001f);
      MlaArgs a{.q = host(q, {T, d.q_width()}), .kv_cache = cache.host, .kv_b = kv_b.weight, .meta = &meta, .dims = d,
                .softmax_scale = 0.09f, .form = MlaForm::kAbsorbed};
      const std::vector<float> want = cpu_mla_then_device_args(a, q, cache.device, kv_b);
      a.bf16_operands = true;
      const ResetKernelSwitches reset;
      set_mla_prefill_for_tests(0);
      const std::vector<float> absorbed = down(gpu_->mla_attention(a, *dev_arena_));
      set_mla_prefill_for_tests(1, 32);
      const std::vector<float> naive = down(gpu_->mla_attention(a, *dev_arena_));
      set_mla_prefill_for_tests(1, 16);  // a warp's 16 rows: each row's products in the same order, the same bits
      EXPECT_EQ(down(gpu_->mla_attention(a, *dev_arena_)), naive) << "16 rows a warp";
      const std::string what = "H=" + std::to_string(d.n_heads) + " Dv=" + std::to_string(d.v_head_dim) + " cache " +
                               std::string(dtype_name(kv_dtype));
      EXPECT_LE(rel_l2(absorbed, want), kBf16OperandsRelL2) << what;
      EXPECT_LE(rel_l2(naive, want), kNaivePrefillRelL2) << what;
      // Row by row: the single tokens (rows 0, 151, 222; on the absorbed kernels, launched apart) and each run (on
      // the prefill kernel: not the absorbed kernels' bits).
      const size_t row = static_cast<size_t>(d.n_heads * d.v_head_dim);
      const auto rows = [&](const std::vector<float>& v, size_t r0, size_t n) {
        return std::vector<float>(v.begin() + static_cast<std::ptrdiff_t>(r0 * row), v.begin() + static_cast<std::ptrdiff_t>((r0 + n) * row));
      };
      for (size_t r : {size_t{0}, size_t{151}, size_t{222}}) {
        EXPECT_LE(rel_l2(rows(naive, r, 1), rows(want, r, 1)), kBf16OperandsRelL2) << what << " single token at row " << r;
      }
      EXPECT_GT(rel_l2(rows(naive, 1, 150), rows(absorbed, 1, 150)), 1e-7) << what << " the first run";
      EXPECT_GT(rel_l2(rows(naive, 152, 70), rows(absorbed, 152, 70)), 1e-7) << what << " the second run";
      EXPECT_LE(rel_l2(rows(naive, 1, 150), rows(want, 1, 150)), kNaivePrefillRelL2) << what << " the first run";
      EXPECT_LE(rel_l2(rows(naive, 152, 70), rows(want, 152, 70)), kNaivePrefillRelL2) << what << " the second run";
      // Keys in chunks (the running softmax carried from chunk to chunk): of 64 (whole tiles: the first run's 187
      // keys in three, the second's 70 in two; the same tiles, so the same bits where kv_b's matmul at 64 rows gives
      // the bits it gives at 187 (on an H100, two of the four cases here)) and of 96 (a partial tile
      // each: other sums, other bits; the second run in one chunk: its bits).
      for (int64_t chunk : {64, 96}) {
        set_mla_prefill_for_tests(1, 32, chunk);
        const std::vector<float> chunked = down(gpu_->mla_attention(a, *dev_arena_));
        const std::string in_chunks = what + " in chunks of " + std::to_string(chunk) + " keys";
        EXPECT_LE(rel_l2(rows(chunked, 1, 150), rows(want, 1, 150)), kNaivePrefillRelL2) << in_chunks;
        EXPECT_LE(rel_l2(rows(chunked, 152, 70), rows(want, 152, 70)), kNaivePrefillRelL2) << in_chunks;
        if (chunk == 96) {
          EXPECT_NE(rows(chunked, 1, 150), rows(naive, 1, 150)) << in_chunks;
          EXPECT_EQ(rows(chunked, 152, 70), rows(naive, 152, 70)) << in_chunks;
        }
      }
    }
  }
  // The cost rule at the model's sizes (R 256, Dn 64, Dr 64, Dv 128), with the environment's switch on.
  if (std::getenv("QUATRE_CUDA_MLA_PREFILL") == nullptr) {
    EXPECT_TRUE(mla_prefill_pays(8192, int64_t{8192} * 8193 / 2, 8192, 256, 64, 64, 128));
    EXPECT_TRUE(mla_prefill_pays(512, int64_t{512} * (6913 + 7424) / 2, 7424, 256, 64, 64, 128));  // break-even ~461
    EXPECT_FALSE(mla_prefill_pays(256, int64_t{256} * (6913 + 7168) / 2, 7168, 256, 64, 64, 128));
    EXPECT_TRUE(mla_prefill_pays(8192, int64_t{8192} * 12000, 16384, 256, 64, 64, 128));  // two chunks of keys
    EXPECT_FALSE(mla_prefill_pays(127, int64_t{127} * 64, 127, 256, 64, 64, 128));        // shorter than a run
  }
}

// RMSNorm on every path: rows in registers for widths that are multiples of 4 up to 16384 (one row per 32..1024
// threads, several rows a block for narrow ones), the block-per-row kernel for other widths; 1, 3 and 17 rows.
TEST_F(CudaOps, RmsNormMatchesCpuForEveryWidth) {
  uint64_t seed = 200;
  for (int64_t n : {4096, 1024, 256, 72, 70, 16384, 20000}) {
    for (int64_t M : {1, 3, 17}) {
      for (DType dtype : {DType::BF16, DType::F8_E4M3}) {
        const StoredWeight gain(randn(static_cast<size_t>(n), ++seed, 1.0f), {n}, dtype, 0.01f);
        std::vector<float> x = randn(static_cast<size_t>(M * n), ++seed, 3.0f);
        const std::vector<float> want = vec(cpu_.rms_norm(host(x, {M, n}), gain.weight, 1e-5f, host_arena_));
        EXPECT_LE(rel_l2(down(gpu_->rms_norm(up(x, {M, n}), prep(gain), 1e-5f, *dev_arena_)), want), kF32RelL2)
            << "n=" << n << " M=" << M << " " << dtype_name(dtype);
      }
    }
  }
}

}  // namespace
}  // namespace quatre::cuda
