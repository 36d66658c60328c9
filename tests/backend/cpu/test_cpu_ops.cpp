// CpuBackend ops against naive references: matmul for every weight dtype (FP8 with its scale; W8A8 by hand and
// against a float64 evaluation), rms_norm, RoPE
// against a float64 evaluation of MODEL.md §3.4/§3.6 with the §4.1 table, routing by hand, MoE forced to one
// expert == that expert as a dense FFN, absorbed MLA == naive MLA == a float64 attention (both softmax-scale
// conventions), paged cache reads that never touch poisoned entries, and the thread pool.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numbers>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "../backend_test_util.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/ref_ops.h"
#include "io/model_config.h"
#include "model/rope.h"

namespace quatre::cpu {
namespace {

using backend_test::host_tensor;
using backend_test::randn;
using backend_test::StoredWeight;
using backend_test::to_vector;

void expect_close(const std::vector<float>& got, const std::vector<float>& want, double rel, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  // Error relative to max(|want_i|, rms(want)): fp32 sums that cancel keep an absolute error of the size of
  // their terms, not of their result.
  double square_sum = 0;
  for (float w : want) square_sum += static_cast<double>(w) * w;
  const double rms = std::sqrt(square_sum / static_cast<double>(std::max<size_t>(want.size(), 1)));
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = std::abs(got[i] - want[i]) / std::max({static_cast<double>(std::abs(want[i])), rms, 1e-30});
    if (!(e <= worst)) {
      worst = e;
      at = i;
    }
  }
  EXPECT_LE(worst, rel) << what << ": worst relative error at " << at << ": got " << got[at] << " want " << want[at];
}

class CpuOps : public testing::Test {
 protected:
  CpuBackend be_{3};  // odd thread count: uneven ranges
  Arena arena_{host_memory(), {.poison = true}};
};

TEST_F(CpuOps, MatmulMatchesReferenceForEveryDtype) {
  const int64_t out = 37, in = 129;
  const std::vector<float> w = randn(out * in, 1, 0.3f);
  for (DType dtype : {DType::F32, DType::BF16, DType::F16, DType::F8_E4M3}) {
    const StoredWeight sw(w, {out, in}, dtype, /*scale=*/0.3f * 3 / 448);
    for (int64_t M : {1, 3, 17}) {
      std::vector<float> x = randn(static_cast<size_t>(M * in), 2 + static_cast<uint64_t>(M));
      const std::vector<float> got = to_vector(be_.matmul(host_tensor(x, {M, in}), sw.weight, arena_));
      expect_close(got, ref::matmul(x, M, sw.weight), 1e-5, dtype_name(dtype).data());
      if (dtype == DType::F8_E4M3) {  // the scale multiplies: against the fp32 weights, FP8 error only
        const StoredWeight exact(w, {out, in}, DType::F32);
        const std::vector<float> want = ref::matmul(x, M, exact.weight);
        double err = 0, norm = 0;
        for (size_t i = 0; i < got.size(); ++i) {
          err += (got[i] - want[i]) * (got[i] - want[i]);
          norm += want[i] * want[i];
        }
        EXPECT_LT(std::sqrt(err / norm), 0.05) << "FP8 with its scale vs the unquantised weights";
        EXPECT_GT(std::sqrt(err / norm), 1e-4);
      }
    }
  }
}

// W8A8 (core/backend.h, MODEL.md §6.2) by hand: a = 0.5, raw E4M3 weights 1, 2, -1 at weight scale 0.25.
// x / a = 2 (exact), 0.6 (between E4M3's 0.5625 and 0.625: the nearer, 0.625), -2000 (saturates to -448) and
// 0.046875 (3·2^-6: exact); y = Σ x_q · w · (a · 0.25).
TEST_F(CpuOps, W8A8MatmulHandExample) {
  const StoredWeight sw({1.0f, 2.0f, -1.0f, 0.0f, 0.0f, 0.0f, 1.0f, 1.0f}, {2, 4}, DType::F8_E4M3, 1.0f);
  Weight w = sw.weight;
  w.weight_scale = 0.25f;
  w.activation_scale = 0.5f;
  std::vector<float> x = {1.0f, 0.3f, -1000.0f, 0.0234375f};
  const std::vector<float> got = to_vector(be_.matmul(host_tensor(x, {1, 4}), w, arena_));
  const float scale = 0.5f * 0.25f;
  ASSERT_EQ(got.size(), 2u);
  EXPECT_FLOAT_EQ(got[0], (2.0f * 1.0f + 0.625f * 2.0f + -448.0f * -1.0f) * scale);
  EXPECT_FLOAT_EQ(got[1], (-448.0f * 1.0f + 0.046875f * 1.0f) * scale);
  w.activation_scale.reset();  // W8A16: the inputs as they are
  const std::vector<float> plain = to_vector(be_.matmul(host_tensor(x, {1, 4}), w, arena_));
  EXPECT_FLOAT_EQ(plain[0], (1.0f * 1.0f + 0.3f * 2.0f + -1000.0f * -1.0f) * 0.25f);
}

// W8A8 against a float64 evaluation of the rule on random inputs: each x / a rounded by core's E4M3 rounding (its
// own tests hold it to torch's), the products and sums in float64.
TEST_F(CpuOps, W8A8MatmulMatchesFloat64Rule) {
  const int64_t out = 37, in = 129;
  StoredWeight sw(randn(out * in, 11, 0.3f), {out, in}, DType::F8_E4M3, 0.3f * 3 / 448);
  const float a = 2.5f / 448.0f;  // saturates past ±2.5
  sw.weight.activation_scale = a;
  for (int64_t M : {1, 5}) {
    std::vector<float> x = randn(static_cast<size_t>(M * in), 12 + static_cast<uint64_t>(M));
    const std::vector<float> got = to_vector(be_.matmul(host_tensor(x, {M, in}), sw.weight, arena_));
    std::vector<float> want(static_cast<size_t>(M * out));
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t o = 0; o < out; ++o) {
        double sum = 0;
        for (int64_t k = 0; k < in; ++k) {
          const double xq = fp8e4m3_to_f32(f32_to_fp8e4m3(x[static_cast<size_t>(m * in + k)] / a));
          sum += xq * fp8e4m3_to_f32(static_cast<uint8_t>(sw.bytes[static_cast<size_t>(o * in + k)]));
        }
        want[static_cast<size_t>(m * out + o)] = static_cast<float>(sum * a * sw.weight.weight_scale);
      }
    }
    expect_close(got, want, 1e-5, "W8A8");
  }
}

TEST_F(CpuOps, RmsNormMatchesReference) {
  const int64_t n = 77;
  std::vector<float> gamma = randn(n, 3, 0.1f);
  for (float& v : gamma) v += 1.0f;
  const StoredWeight g(gamma, {n}, DType::BF16);
  std::vector<float> x = randn(5 * n, 4, 3.0f);
  expect_close(to_vector(be_.rms_norm(host_tensor(x, {5, n}), g.weight, 1e-6f, arena_)), ref::rms_norm(x, n, g.weight, 1e-6f),
               1e-5, "rms_norm");
}

// MODEL.md §3.4 and §3.6 evaluated directly in float64 with the §4.1 table: interleaved pairs of the rope slice
// of every head and of k_rope rotate by pos·inv_freq[i]; then the whole query is multiplied by l4(pos).
// transformers (and we) round the angle pos·inv_freq to fp32, which moves it by up to pos·2^-24 rad; the tolerance
// grows with the position accordingly.
TEST_F(CpuOps, RopeMatchesFloat64EvaluationOfTheSpec) {
  const std::vector<float> inv_freq = model::rope_inv_freq(io::preset("mistral-small-4").text);
  const double table[32] = {1.000000000e+00, 7.498942093e-01, 5.623413252e-01, 4.216965034e-01, 3.162277660e-01,
                            2.371373706e-01, 1.778279410e-01, 1.333521432e-01, 1.000000000e-01, 7.498942093e-02,
                            5.623413252e-02, 4.216965034e-02, 3.162277660e-02, 2.190385448e-02, 1.506835317e-02,
                            1.028189902e-02, 6.947115385e-03, 4.637266475e-03, 3.048268482e-03, 1.964031191e-03,
                            1.231463897e-03, 7.424793874e-04, 4.210589468e-04, 2.139724894e-04, 8.413461538e-05,
                            5.858548510e-06, 4.393291603e-06, 3.294503933e-06, 2.470529422e-06, 1.852635708e-06,
                            1.389280789e-06, 1.041813619e-06};
  const MlaDims d{.n_heads = 3, .kv_lora_rank = 8, .qk_nope_head_dim = 64, .qk_rope_head_dim = 64, .v_head_dim = 8};
  const std::vector<int32_t> positions = {0, 1, 7, 100, 8191, 8192, 20000};
  const auto T = static_cast<int64_t>(positions.size());
  std::vector<float> q = randn(static_cast<size_t>(T * d.q_width()), 5), k = randn(static_cast<size_t>(T * 64), 6);
  const std::vector<float> q0 = q, k0 = k;
  be_.rope(host_tensor(q, {T, d.q_width()}), host_tensor(k, {T, 64}),
           {.inv_freq = inv_freq, .positions = positions, .dims = d, .llama4_beta = 0.1f,
            .llama4_original_max_position_embeddings = 8192});
  for (int64_t t = 0; t < T; ++t) {
    const double p = positions[static_cast<size_t>(t)];
    const double l4 = 1 + 0.1 * std::log(1 + std::floor(p / 8192));
    const double tol = 2e-5 + 4 * p * std::ldexp(1.0, -24);
    auto check = [&](const float* got, const float* x, double scale, const char* what) {
      for (int i = 0; i < 32; ++i) {
        const double a = p * table[i];
        const double y0 = (x[2 * i] * std::cos(a) - x[2 * i + 1] * std::sin(a)) * scale;
        const double y1 = (x[2 * i + 1] * std::cos(a) + x[2 * i] * std::sin(a)) * scale;
        ASSERT_NEAR(got[2 * i], y0, tol) << what << " position " << p << " lane " << i;
        ASSERT_NEAR(got[2 * i + 1], y1, tol) << what << " position " << p << " lane " << i;
      }
    };
    for (int64_t h = 0; h < d.n_heads; ++h) {
      const size_t head = static_cast<size_t>(t * d.q_width() + h * 128);
      for (int i = 0; i < 64; ++i) {  // nope part: only the temperature
        ASSERT_NEAR(q[head + static_cast<size_t>(i)], q0[head + static_cast<size_t>(i)] * l4, 1e-6) << "q_nope";
      }
      check(&q[head + 64], &q0[head + 64], l4, "q_rope");
    }
    check(&k[static_cast<size_t>(t * 64)], &k0[static_cast<size_t>(t * 64)], 1.0, "k_rope");
  }
}

// Softmax over all experts, top-K by probability (ties: lower index first), gates renormalised over the K and
// multiplied by routed_scaling_factor.
TEST_F(CpuOps, RouteHandExample) {
  std::vector<float> logits = {0, 1, 2, 3,    // top-2 {3, 2}: gates e/(1+e), 1/(1+e)
                               1, 5, 5, 5,    // a three-way tie: {1, 2}, gates 1/2 each
                               4, 0, 0, 4.5f};
  const Routing r = be_.route(host_tensor(logits, {3, 4}), {.n_experts_per_tok = 2, .routed_scaling_factor = 2.5f}, arena_);
  const int32_t* ids = r.expert_ids.data_as<int32_t>();
  const float* g = r.gates.data_as<float>();
  EXPECT_EQ(std::vector<int32_t>(ids, ids + 6), (std::vector<int32_t>{3, 2, 1, 2, 3, 0}));
  const double e = std::numbers::e;
  EXPECT_NEAR(g[0], 2.5 * e / (1 + e), 1e-6);
  EXPECT_NEAR(g[1], 2.5 / (1 + e), 1e-6);
  EXPECT_NEAR(g[2], 1.25, 1e-6);
  EXPECT_NEAR(g[3], 1.25, 1e-6);
  const double s = std::exp(0.5);
  EXPECT_NEAR(g[4], 2.5 * s / (1 + s), 1e-6);
  EXPECT_NEAR(g[5], 2.5 / (1 + s), 1e-6);
}

struct Experts {
  Experts(int n, int64_t D, int64_t F, DType dtype) {
    for (int e = 0; e < n; ++e) {
      const auto seed = static_cast<uint64_t>(100 + 3 * e);
      stored.emplace_back(randn(F * D, seed, 0.2f), std::initializer_list<int64_t>{F, D}, dtype, 0.01f);
      stored.emplace_back(randn(F * D, seed + 1, 0.2f), std::initializer_list<int64_t>{F, D}, dtype, 0.01f);
      stored.emplace_back(randn(D * F, seed + 2, 0.2f), std::initializer_list<int64_t>{D, F}, dtype, 0.01f);
    }
    for (size_t e = 0; e < stored.size(); e += 3) {
      ffn.push_back({stored[e].weight, stored[e + 1].weight, stored[e + 2].weight});
    }
  }
  std::vector<StoredWeight> stored;
  std::vector<FfnWeights> ffn;
};

TEST_F(CpuOps, MoeForcedToOneExpertEqualsThatExpertAsADenseFfn) {
  const int64_t T = 7, D = 24, F = 10, K = 2;
  Experts ex(5, D, F, DType::F8_E4M3);
  std::vector<float> x = randn(T * D, 7);
  const Tensor xt = host_tensor(x, {T, D});
  const Tensor dense = be_.ffn(xt, ex.ffn[3], arena_);
  expect_close(to_vector(dense), ref::ffn(x, T, ex.ffn[3]), 1e-5, "ffn vs reference");
  // Routing: expert 3 with gate 1 and a second slot with gate 0 (any expert), so y = Expert_3(x) exactly.
  std::vector<int32_t> ids(T * K);
  std::vector<float> gates(T * K);
  for (int64_t t = 0; t < T; ++t) {
    ids[static_cast<size_t>(t * K)] = 3;
    gates[static_cast<size_t>(t * K)] = 1.0f;
    ids[static_cast<size_t>(t * K + 1)] = static_cast<int32_t>(t % 5 == 3 ? 0 : t % 5);
    gates[static_cast<size_t>(t * K + 1)] = 0.0f;
  }
  const Routing r{Tensor(ids.data(), DType::I32, {T, K}), Tensor(gates.data(), DType::F32, {T, K})};
  EXPECT_EQ(to_vector(be_.moe({.x = xt, .routing = r, .experts = ex.ffn}, arena_)), to_vector(dense));
  // With a shared expert: y = Expert_3(x) + Shared(x).
  std::vector<float> want = to_vector(dense);
  const std::vector<float> shared = to_vector(be_.ffn(xt, ex.ffn[0], arena_));
  for (size_t i = 0; i < want.size(); ++i) want[i] += shared[i];
  EXPECT_EQ(to_vector(be_.moe({.x = xt, .routing = r, .experts = ex.ffn, .shared = &ex.ffn[0]}, arena_)), want);
}

TEST_F(CpuOps, MoeWeightsEachExpertByItsGate) {
  const int64_t T = 4, D = 16, F = 8, K = 2;
  Experts ex(3, D, F, DType::BF16);
  std::vector<float> x = randn(T * D, 8);
  const Tensor xt = host_tensor(x, {T, D});
  std::vector<int32_t> ids = {2, 0, 1, 2, 0, 1, 2, 1};
  std::vector<float> gates = {0.75f, 0.25f, 0.5f, 0.5f, 1.0f, 0.0f, 0.1f, 0.9f};
  const Routing r{Tensor(ids.data(), DType::I32, {T, K}), Tensor(gates.data(), DType::F32, {T, K})};
  const std::vector<float> got = to_vector(be_.moe({.x = xt, .routing = r, .experts = ex.ffn}, arena_));
  for (int64_t t = 0; t < T; ++t) {
    std::vector<float> row(x.begin() + t * D, x.begin() + (t + 1) * D), want(static_cast<size_t>(D), 0.0f);
    for (int64_t k = 0; k < K; ++k) {
      const std::vector<float> y = ref::ffn(row, 1, ex.ffn[static_cast<size_t>(ids[static_cast<size_t>(t * K + k)])]);
      for (int64_t i = 0; i < D; ++i) want[static_cast<size_t>(i)] += gates[static_cast<size_t>(t * K + k)] * y[static_cast<size_t>(i)];
    }
    expect_close({got.begin() + t * D, got.begin() + (t + 1) * D}, want, 1e-5, "moe row");
  }
  // Into a residual: r + MoE(x), returned as r itself; and matmul_add: r += x · wᵀ, as add_to(r, matmul(x, w)).
  std::vector<float> res0 = randn(T * D, 9), res = res0;
  const Tensor rt = host_tensor(res, {T, D});
  const Tensor out = be_.moe({.x = xt, .routing = r, .experts = ex.ffn, .residual = &rt}, arena_);
  EXPECT_EQ(out.data(), rt.data());
  for (size_t i = 0; i < res.size(); ++i) EXPECT_EQ(res[i], res0[i] + got[i]) << i;
  const Weight& w = ex.ffn[0].up;  // [F, D]
  std::vector<float> acc0 = randn(T * F, 10), acc = acc0;
  be_.matmul_add(host_tensor(acc, {T, F}), xt, w, arena_);
  const std::vector<float> prod = to_vector(be_.matmul(xt, w, arena_));
  for (size_t i = 0; i < acc.size(); ++i) EXPECT_EQ(acc[i], acc0[i] + prod[i]) << i;
}

// MLA over a paged cache: two sequences with scattered blocks, every other slot poisoned with NaN.
class MlaOp : public CpuOps {
 protected:
  static constexpr MlaDims kDims{.n_heads = 3, .kv_lora_rank = 16, .qk_nope_head_dim = 8, .qk_rope_head_dim = 6,
                                 .v_head_dim = 5};
  static constexpr int64_t kBlockSize = 4, kBlocks = 12, kWidth = 16 + 6;
  MlaOp() : cache_(kBlocks * kBlockSize * kWidth, std::numeric_limits<float>::quiet_NaN()) {
    // Sequence 0: 9 entries in blocks {7, 2, 10}; sequence 1: 5 entries in blocks {4, 0}.
    tables_ = {7, 2, 10, 4, 0, -1};
    const std::vector<float> latent = randn(14 * kWidth, 9);
    int64_t row = 0;
    for (int s = 0; s < 2; ++s) {
      for (int64_t j = 0; j < (s == 0 ? 9 : 5); ++j, ++row) {
        const int64_t slot = tables_[static_cast<size_t>(s * 3 + j / kBlockSize)] * kBlockSize + j % kBlockSize;
        std::copy_n(latent.begin() + row * kWidth, kWidth, cache_.begin() + slot * kWidth);
      }
    }
    // Tokens: the last 3 entries of sequence 0 and the last 2 of sequence 1, interleaved.
    seq_ = {0, 1, 0, 1, 0};
    ctx_ = {7, 4, 8, 5, 9};
    q_ = randn(static_cast<size_t>(5 * kDims.q_width()), 10);
  }

  Tensor run(MlaForm form, float scale, const Weight& kv_b) {
    meta_ = {.seq_index = seq_, .context_lens = ctx_, .block_tables = tables_, .max_blocks_per_seq = 3};
    return be_.mla_attention({.q = host_tensor(q_, {5, kDims.q_width()}),
                              .kv_cache = host_tensor(cache_, {kBlocks, kBlockSize, kWidth}),
                              .kv_b = kv_b,
                              .meta = &meta_,
                              .dims = kDims,
                              .softmax_scale = scale,
                              .form = form},
                             arena_);
  }

  // Float64 expanded attention (MODEL.md §3.5-3.8) over the same cache.
  std::vector<float> reference(double scale, const Weight& kv_b) const {
    const int64_t H = kDims.n_heads, Dn = 8, Dr = 6, Dv = 5, R = 16;
    std::vector<float> out;
    for (size_t t = 0; t < seq_.size(); ++t) {
      for (int64_t h = 0; h < H; ++h) {
        std::vector<double> s, v_rows;
        for (int64_t j = 0; j < ctx_[t]; ++j) {
          const int64_t slot = tables_[static_cast<size_t>(seq_[t] * 3 + j / kBlockSize)] * kBlockSize + j % kBlockSize;
          const float* c = &cache_[static_cast<size_t>(slot * kWidth)];
          double dot = 0;
          for (int64_t e = 0; e < Dn + Dr; ++e) {
            double k = 0;
            if (e < Dn) {
              for (int64_t r = 0; r < R; ++r) k += load_as_f32(kv_b.w.data(), kv_b.w.dtype(), static_cast<size_t>((h * (Dn + Dv) + e) * R + r)) * kv_b.weight_scale * c[r];
            } else {
              k = c[R + e - Dn];
            }
            dot += q_[static_cast<size_t>(static_cast<int64_t>(t) * kDims.q_width() + h * (Dn + Dr) + e)] * k;
          }
          s.push_back(dot * scale);
          for (int64_t e = 0; e < Dv; ++e) {
            double v = 0;
            for (int64_t r = 0; r < R; ++r) v += load_as_f32(kv_b.w.data(), kv_b.w.dtype(), static_cast<size_t>((h * (Dn + Dv) + Dn + e) * R + r)) * kv_b.weight_scale * c[r];
            v_rows.push_back(v);
          }
        }
        double m = -1e300, sum = 0;
        for (double x : s) m = std::max(m, x);
        for (double& x : s) sum += (x = std::exp(x - m));
        for (int64_t e = 0; e < Dv; ++e) {
          double o = 0;
          for (size_t j = 0; j < s.size(); ++j) o += s[j] / sum * v_rows[j * static_cast<size_t>(Dv) + static_cast<size_t>(e)];
          out.push_back(static_cast<float>(o));
        }
      }
    }
    return out;
  }

  std::vector<float> cache_, q_;
  std::vector<int32_t> tables_, seq_, ctx_;
  AttnMeta meta_;
};

TEST_F(MlaOp, AbsorbedEqualsNaiveEqualsFloat64Attention) {
  for (DType dtype : {DType::BF16, DType::F8_E4M3}) {
    const StoredWeight kv_b(randn(3 * 13 * 16, 11, 0.3f), {3 * 13, 16}, dtype, 0.005f);
    for (const io::TextConfig& t : {io::preset("tiny").text, io::preset("mistral-small-4").text}) {
      for (model::SoftmaxScale convention : {model::SoftmaxScale::kRelease, model::SoftmaxScale::kTransformers}) {
        const float scale = model::softmax_scale(t, convention);
        const std::vector<float> naive = to_vector(run(MlaForm::kNaive, scale, kv_b.weight));
        const std::vector<float> absorbed = to_vector(run(MlaForm::kAbsorbed, scale, kv_b.weight));
        const std::vector<float> want = reference(scale, kv_b.weight);
        expect_close(naive, want, 2e-5, "naive vs float64");
        expect_close(absorbed, want, 2e-5, "absorbed vs float64");
        expect_close(absorbed, naive, 2e-5, "absorbed vs naive");
      }
    }
    // kTransformers is kRelease with the scale multiplied by mscale² (real config: 2.2058280), nothing else.
    const io::TextConfig real = io::preset("mistral-small-4").text;
    const float release = model::softmax_scale(real, model::SoftmaxScale::kRelease);
    const float folded = model::softmax_scale(real, model::SoftmaxScale::kTransformers);
    EXPECT_NEAR(folded / release, 2.2058280296038424, 1e-6);
    const std::vector<float> a = to_vector(run(MlaForm::kAbsorbed, folded, kv_b.weight));
    expect_close(a, reference(static_cast<double>(release) * 2.2058280296038424, kv_b.weight), 2e-5, "folded scale");
    const std::vector<float> b = to_vector(run(MlaForm::kAbsorbed, release, kv_b.weight));
    double change = 0;
    for (size_t i = 0; i < a.size(); ++i) change = std::max(change, static_cast<double>(std::abs(a[i] - b[i])));
    EXPECT_GT(change, 1e-3) << "the two conventions must give different attention";
  }
}

TEST_F(CpuOps, KvWriteFillsTheSlotsRows) {
  std::vector<float> cache(3 * 2 * 5, -1.0f), c = {1, 2, 3, 4, 5, 6}, kr = {7, 8, 9, 10};
  const std::vector<int64_t> slots = {4, 1};
  be_.kv_write(host_tensor(cache, {3, 2, 5}), host_tensor(c, {2, 3}), host_tensor(kr, {2, 2}), slots);
  EXPECT_EQ(std::vector<float>(cache.begin() + 20, cache.begin() + 25), (std::vector<float>{1, 2, 3, 7, 8}));
  EXPECT_EQ(std::vector<float>(cache.begin() + 5, cache.begin() + 10), (std::vector<float>{4, 5, 6, 9, 10}));
  EXPECT_EQ(cache[0], -1.0f);
}

// MLA's cache entry from kv_a's output: the first R columns through RMSNorm (ref::rms_norm), the last Dr rotated
// pairwise at the token's position (in float64), in the token's slot; the other slots untouched; q roped in the same
// op exactly as rope alone does it (the spec's rope: RopeMatchesFloat64EvaluationOfTheSpec), and rope with q or
// k_rope left out rotating the other as the call with both.
TEST_F(CpuOps, RopeKvWriteNormalisesAndRotatesIntoTheSlots) {
  const MlaDims d{.n_heads = 2, .kv_lora_rank = 12, .qk_nope_head_dim = 4, .qk_rope_head_dim = 8, .v_head_dim = 4};
  const int64_t T = 3, R = d.kv_lora_rank, Dr = d.qk_rope_head_dim, W = d.cache_width();
  const std::vector<float> inv_freq = {1.0f, 0.3f, 0.01f, 1e-4f};
  const std::vector<int32_t> positions = {0, 5, 70000};
  const std::vector<int64_t> slots = {6, 1, 3};
  std::vector<float> kv_a = randn(static_cast<size_t>(T * W), 40, 2.0f), cache(8 * W, -7.0f);
  std::vector<float> gamma = randn(static_cast<size_t>(R), 41, 0.1f);
  for (float& v : gamma) v += 1.0f;
  const StoredWeight g(gamma, {R}, DType::F32);
  const RopeArgs args{.inv_freq = inv_freq, .positions = positions, .dims = d, .llama4_beta = 0.1f,
                      .llama4_original_max_position_embeddings = 8192};
  std::vector<float> q = randn(static_cast<size_t>(T * d.q_width()), 42), q_alone = q;
  be_.rope_kv_write(host_tensor(q, {T, d.q_width()}), host_tensor(cache, {4, 2, W}), host_tensor(kv_a, {T, W}),
                    g.weight, 1e-6f, args, slots, arena_);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<float> c(kv_a.begin() + t * W, kv_a.begin() + t * W + R);
    const std::vector<float> want_c = ref::rms_norm(c, R, g.weight, 1e-6f);
    const float* got = cache.data() + slots[static_cast<size_t>(t)] * W;
    expect_close(std::vector<float>(got, got + R), want_c, 1e-6, "c_kv");
    const float* k = kv_a.data() + t * W + R;
    for (int64_t i = 0; i < Dr / 2; ++i) {
      const double a = static_cast<double>(static_cast<float>(positions[static_cast<size_t>(t)]) * inv_freq[static_cast<size_t>(i)]);
      EXPECT_NEAR(got[R + 2 * i], k[2 * i] * std::cos(a) - k[2 * i + 1] * std::sin(a), 1e-5) << "token " << t << " pair " << i;
      EXPECT_NEAR(got[R + 2 * i + 1], k[2 * i + 1] * std::cos(a) + k[2 * i] * std::sin(a), 1e-5) << "token " << t << " pair " << i;
    }
  }
  for (int64_t slot : {0, 2, 4, 5, 7}) {
    EXPECT_EQ(std::count(cache.begin() + slot * W, cache.begin() + (slot + 1) * W, -7.0f), W) << "slot " << slot;
  }
  be_.rope(host_tensor(q_alone, {T, d.q_width()}), Tensor{}, args);
  EXPECT_EQ(q_alone, q) << "q in rope_kv_write and in rope";
  std::vector<float> q2 = randn(static_cast<size_t>(T * d.q_width()), 43), k2 = randn(static_cast<size_t>(T * Dr), 44);
  std::vector<float> q2_alone = q2, k2_alone = k2;
  be_.rope(host_tensor(q2, {T, d.q_width()}), host_tensor(k2, {T, Dr}), args);
  be_.rope(Tensor{}, host_tensor(k2_alone, {T, Dr}), args);
  be_.rope(host_tensor(q2_alone, {T, d.q_width()}), Tensor{}, args);
  EXPECT_EQ(q2_alone, q2);
  EXPECT_EQ(k2_alone, k2);
}

}  // namespace
}  // namespace quatre::cpu
