// CudaBackend's vision-tower ops against CpuBackend on seeded random inputs: the 2-D RoPE (both pair layouts),
// attention inside segments (one, several, single-row and long ones; every head size each kernel is built for, on
// the tensor cores at both tile heights and on the fp32 kernel; fp32 and BF16 operands; the same bits on a second
// run), the exact GELU over a wide range; and the InvalidRequests of bad arguments.
// Errors: max |got − want| / max |want|. Skips without a GPU.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include "cuda_test_fixture.h"
#include "core/dtype.h"
#include "core/error.h"

namespace quatre::cuda {
namespace {

using backend_test::randn;

// max |got − want| / max |want| (infinity when got holds a non-finite value).
double max_rel_err(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  double err = 0, scale = 1e-30;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    err = std::max(err, std::abs(static_cast<double>(got[i]) - want[i]));
    scale = std::max(scale, std::abs(static_cast<double>(want[i])));
  }
  return err / scale;
}

// Pixtral's frequencies theta^(-2j/dh), j < dh/2.
std::vector<float> freqs(int64_t dh) {
  std::vector<float> f(static_cast<size_t>(dh / 2));
  for (size_t j = 0; j < f.size(); ++j) f[j] = std::pow(10000.0f, -2.0f * static_cast<float>(j) / static_cast<float>(dh));
  return f;
}

using CudaVision = CudaVsCpu;

TEST_F(CudaVision, Rope2dMatchesCpu) {
  const int64_t N = 50;
  std::vector<int32_t> rows(N), cols(N);  // patches of a 110 x 110 grid, far ones too (large angles)
  for (int64_t t = 0; t < N; ++t) {
    rows[static_cast<size_t>(t)] = static_cast<int32_t>((t * 7) % 110);
    cols[static_cast<size_t>(t)] = static_cast<int32_t>((t * 13) % 110);
  }
  for (int64_t dh : {8, 16, 64}) {
    for (bool half_pairs : {false, true}) {
      SCOPED_TRACE(testing::Message() << "dh " << dh << (half_pairs ? " half pairs" : " interleaved"));
      const int64_t H = dh == 64 ? 3 : 2, width = H * dh;
      const std::vector<float> f = freqs(dh);
      const Rope2dArgs args{.freq = f, .rows = rows, .cols = cols, .n_heads = H, .head_dim = dh, .half_pairs = half_pairs};
      std::vector<float> q = randn(static_cast<size_t>(N * width), 1), k = randn(static_cast<size_t>(N * width), 2);
      const Tensor qd = up(q, {N, width}), kd = up(k, {N, width}, 1);  // k not 16-byte aligned
      gpu_->rope_2d(qd, kd, args);
      cpu_.rope_2d(host(q, {N, width}), host(k, {N, width}), args);
      EXPECT_LE(max_rel_err(down(qd), q), 1e-6);
      EXPECT_LE(max_rel_err(down(kd), k), 1e-6);
    }
  }
}

struct AttentionCase {
  int64_t dh, H;
  std::vector<int32_t> bounds;
};

const std::vector<AttentionCase>& attention_cases() {
  static const std::vector<AttentionCase> cases = {
      {8, 4, {0, 100}},          {8, 4, {0, 1, 100}},  {8, 4, {0, 37, 100, 230}},  {16, 2, {0, 100}},
      {16, 2, {0, 1, 100}},      {16, 2, {0, 37, 100, 230}}, {64, 2, {0, 100}},     {64, 2, {0, 1, 100}},
      {64, 2, {0, 37, 100, 230}}, {64, 2, {0, 1500}},   {64, 1, {0, 1}},  // one row alone
      {20, 2, {0, 5, 70, 71}},   {128, 2, {0, 64, 129}}, {100, 1, {0, 65, 200}},     // the other tile widths
      {32, 3, {0, 200, 329}},    {40, 2, {0, 130, 131, 400}},
      {6, 3, {0, 70, 90}},       {13, 2, {0, 100}},  // heads of other sizes than 4k: the fp32 kernel
  };
  return cases;
}

// The kernels a call may take: the tensor cores with tiles of 64 and of 128 query rows, and the fp32 kernel.
struct AttentionKernel {
  const char* name;
  int mode, rows;
};
constexpr AttentionKernel kAttentionKernels[] = {{"tensor cores, 64 rows", 1, 64}, {"tensor cores, 128 rows", 1, 128},
                                                 {"fp32 kernel", 0, 0}};

// The inputs of one case: q (std 2: peaked softmax rows), k, v [N, H*dh], drawn from seed, seed + 1, seed + 2.
struct AttentionInputs {
  int64_t N, width;
  std::vector<float> q, k, v;
};

// body(kernel, i, case, inputs) for every case on every kernel (its switch set, the case traced).
template <typename Body>
void for_each_attention_case(uint64_t seed, Body&& body) {
  for (const AttentionKernel& kernel : kAttentionKernels) {
    set_segment_attention_tc_for_tests(kernel.mode, kernel.rows);
    for (size_t i = 0; i < attention_cases().size(); ++i) {
      const AttentionCase& c = attention_cases()[i];
      const int64_t N = c.bounds.back(), width = c.H * c.dh;
      SCOPED_TRACE(testing::Message() << kernel.name << ": dh " << c.dh << " H " << c.H << " N " << N << " segments "
                                      << c.bounds.size() - 1);
      const auto n = static_cast<size_t>(N * width);
      AttentionInputs in{N, width, randn(n, seed, 2.0f), randn(n, seed + 1), randn(n, seed + 2)};
      body(kernel, i, c, in);
    }
  }
}

// Every case on every kernel, fp32 operands (three BF16 terms on the tensor cores): the CPU's result within 1e-5 of
// its largest value (summation order and exp's ulps), and the same bits on a second run.
TEST_F(CudaVision, SegmentAttentionMatchesCpu) {
  for_each_attention_case(10, [&](const AttentionKernel&, size_t i, const AttentionCase& c, AttentionInputs& in) {
    const int64_t N = in.N, width = in.width;
    SegmentAttentionArgs args{.q = host(in.q, {N, width}), .k = host(in.k, {N, width}), .v = host(in.v, {N, width}),
                              .segment_begin = c.bounds, .n_heads = c.H,
                              .scale = 1.0f / std::sqrt(static_cast<float>(c.dh))};
    const std::vector<float> want = vec(cpu_.segment_attention(args, host_arena_));
    args.q = up(in.q, {N, width});
    args.k = up(in.k, {N, width}, i % 2);  // every other case not 16-byte aligned: the loads one float at a time
    args.v = up(in.v, {N, width});
    const std::vector<float> got = down(gpu_->segment_attention(args, *dev_arena_));
    EXPECT_LE(max_rel_err(got, want), 1e-5);
    EXPECT_EQ(down(gpu_->segment_attention(args, *dev_arena_)), got) << "a second run";
  });
}

// x rounded to BF16 (nearest even), as floats.
std::vector<float> rounded_bf16(std::vector<float> x) {
  for (float& e : x) e = bf16_to_f32(f32_to_bf16(e));
  return x;
}

// BF16 operands (one term): against the CPU on q, k, v rounded to BF16 the only difference left is P's rounding
// (2^-9 relative a weight); against the CPU on the fp32 inputs, the scores' rounding too. Head sizes to 128 (the
// tensor cores take them all with one term), both tile heights; the fp32 kernel ignores the flag (exact).
TEST_F(CudaVision, Bf16OperandsAreTheInputsRoundedToBf16) {
  for_each_attention_case(40, [&](const AttentionKernel& kernel, size_t i, const AttentionCase& c, AttentionInputs& in) {
    const int64_t N = in.N, width = in.width;
    std::vector<float> qr = rounded_bf16(in.q), kr = rounded_bf16(in.k), vr = rounded_bf16(in.v);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.dh));
    const auto on_cpu = [&](std::vector<float>& a, std::vector<float>& b, std::vector<float>& d) {
      return vec(cpu_.segment_attention({.q = host(a, {N, width}), .k = host(b, {N, width}), .v = host(d, {N, width}),
                                         .segment_begin = c.bounds, .n_heads = c.H, .scale = scale},
                                        host_arena_));
    };
    const std::vector<float> exact = on_cpu(in.q, in.k, in.v), of_rounded = on_cpu(qr, kr, vr);
    const SegmentAttentionArgs args{.q = up(in.q, {N, width}), .k = up(in.k, {N, width}, (i + 1) % 2),
                                    .v = up(in.v, {N, width}), .segment_begin = c.bounds, .n_heads = c.H,
                                    .scale = scale, .bf16_operands = true};
    const std::vector<float> got = down(gpu_->segment_attention(args, *dev_arena_));
    const bool bf16 = kernel.mode == 1 && c.dh % 4 == 0;  // the tensor cores take every such head size to 128
    EXPECT_LE(max_rel_err(got, bf16 ? of_rounded : exact), bf16 ? 4e-3 : 1e-5);
    EXPECT_LE(max_rel_err(got, exact), 3e-2);
    if (bf16) {
      EXPECT_GT(max_rel_err(got, exact), 1e-5) << "the operands were not rounded";
    }
    EXPECT_EQ(down(gpu_->segment_attention(args, *dev_arena_)), got) << "a second run";
  });
}

TEST_F(CudaVision, GeluMatchesCpu) {
  std::vector<float> x = randn(4096, 20, 3.0f);
  for (int i = -1200; i <= 1200; ++i) x.push_back(static_cast<float>(i) / 100.0f);  // -12 .. 12
  for (float big : {30.0f, 1e4f, 3e38f, 1e-30f, 0.0f}) {
    x.push_back(big);
    x.push_back(-big);
  }
  const auto n = static_cast<int64_t>(x.size());
  const Tensor xd = up(x, {n});
  std::vector<float> want = x;
  gpu_->gelu(xd);
  cpu_.gelu(host(want, {n}));
  const std::vector<float> got = down(xd);
  for (size_t i = 0; i < x.size(); ++i) {
    // erff's few ulps near ±1 are absolute errors of ~1e-7 · |x| in 0.5·x·(1 + erf) (cancellation for x < 0).
    EXPECT_NEAR(got[i], want[i], 1e-6 * std::max(1.0f, std::abs(x[i]))) << "x = " << x[i];
  }
}

TEST_F(CudaVision, BadArgumentsAreInvalidRequests) {
  const int64_t N = 50, H = 2, dh = 8, width = H * dh;
  const std::vector<float> x = randn(static_cast<size_t>(N * width), 30);
  const Tensor q = up(x, {N, width}), k = up(x, {N, width}), short_k = up(std::vector<float>(x.begin(), x.end() - width), {N - 1, width});
  const auto attend = [&](std::vector<int32_t> bounds, const Tensor& kk, int64_t heads) {
    return gpu_->segment_attention({.q = q, .k = kk, .v = q, .segment_begin = bounds, .n_heads = heads, .scale = 0.35f},
                                   *dev_arena_);
  };
  EXPECT_NO_THROW(attend({0, 20, 50}, k, H));
  EXPECT_THROW(attend({0, 30, 20, 50}, k, H), InvalidRequest) << "unsorted bounds";
  EXPECT_THROW(attend({0, 20, 20, 50}, k, H), InvalidRequest) << "an empty segment";
  EXPECT_THROW(attend({0, 20, 49}, k, H), InvalidRequest) << "bounds that stop short of N";
  EXPECT_THROW(attend({0, 50}, short_k, H), InvalidRequest) << "k of another shape";
  EXPECT_THROW(attend({0, 50}, k, 3), InvalidRequest) << "heads that do not divide the width";
  std::vector<float> hx = x;
  EXPECT_THROW(gpu_->segment_attention({.q = host(hx, {N, width}), .k = k, .v = q, .segment_begin = std::vector<int32_t>{0, 50},
                                        .n_heads = H, .scale = 0.35f},
                                       *dev_arena_),
               InvalidRequest)
      << "a host tensor";
  const std::vector<float> wide = randn(static_cast<size_t>(4 * 132), 31);
  const Tensor wq = up(wide, {4, 132});
  EXPECT_THROW(gpu_->segment_attention({.q = wq, .k = wq, .v = wq, .segment_begin = std::vector<int32_t>{0, 4},
                                        .n_heads = 1, .scale = 0.1f},
                                       *dev_arena_),
               InvalidRequest)
      << "head_dim 132 over the kernel's 128";

  std::vector<int32_t> rows(static_cast<size_t>(N), 1), cols(static_cast<size_t>(N), 2);
  const std::vector<float> f = freqs(dh);
  const Rope2dArgs good{.freq = f, .rows = rows, .cols = cols, .n_heads = H, .head_dim = dh};
  EXPECT_NO_THROW(gpu_->rope_2d(q, k, good));
  Rope2dArgs bad = good;
  bad.freq = std::span<const float>(f).first(f.size() - 1);
  EXPECT_THROW(gpu_->rope_2d(q, k, bad), InvalidRequest) << "dh/2 - 1 frequencies";
  bad = good;
  bad.cols = std::span<const int32_t>(cols).first(N - 1);
  EXPECT_THROW(gpu_->rope_2d(q, k, bad), InvalidRequest) << "a column short";
  EXPECT_THROW(gpu_->rope_2d(q, short_k, good), InvalidRequest) << "k of another shape";
  EXPECT_THROW(gpu_->rope_2d(host(hx, {N, width}), k, good), InvalidRequest) << "a host tensor";
}

}  // namespace
}  // namespace quatre::cuda
