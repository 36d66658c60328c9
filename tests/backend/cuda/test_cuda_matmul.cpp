// launch_matmul on every kernel against CpuBackend (itself tested against naive and float64 references), on fresh
// random inputs, F32/BF16/FP8 weights: the FMA kernel (small M on every split of K over warps, bitwise
// deterministic; 16-byte and scalar loads), the staged kernel (one-row groups through shared memory: every row
// length it takes, 4/8/16 pieces a thread, plain and grouped, SiLU-gated), the small tensor-core kernel (2-64 rows)
// against the CUDA-core ones, the large-M tensor-core tile (split over K where its tiles leave SMs idle), and the
// SiLU-gated gate+up bit for bit as the two problems then the gating; W8A8 (static activation scales) on each of
// them and on the FP8 mma kernel, the input quantised once or on every kernel's loads (the same bits); staged
// matmuls launched as dependents (pdl.cuh) against plain launches, bit for bit. Errors: METHOD.md's
// ‖got − want‖ / ‖want‖ with an fp32 bound. Skips without a GPU.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "cuda_test_fixture.h"
#include "backend/cuda/gemm_lt.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/op_args.h"

namespace quatre::cuda {
namespace {

using backend_test::randn;
using backend_test::rel_l2;
using backend_test::StoredWeight;

class CudaMatmul : public CudaVsCpu {
 public:  // for the shared checks below (expect_small_tc_matches) too
  using CudaVsCpu::prep;
  std::vector<float> cpu_matmul(std::vector<float>& x, int64_t M, int64_t in, const StoredWeight& w) {
    return vec(cpu_.matmul(host(x, {M, in}), w.weight, host_arena_));
  }
  Tensor upload(const std::vector<float>& x, int64_t M, int64_t in) { return up(x, {M, in}); }
  std::vector<float> gpu_matmul(const Tensor& x, const Weight& w) { return down(gpu_->matmul(x, w, *dev_arena_)); }
};

TEST_F(CudaMatmul, MatmulMatchesCpuForEveryDtypeAndKernel) {
  uint64_t seed = 1;
  for (DType dtype : {DType::F32, DType::BF16, DType::F8_E4M3}) {
    // The small-M kernel (4 lanes a column, 8 columns a warp): 1, 2, 4 and 8 warps a column for each dtype (by
    // K), N not a multiple of a warp's 8 columns nor of a block's, K not a multiple of the 4 lanes' stride (and
    // shorter than it: idle lanes); K = 50 or x one float off 16 bytes: scalar loads. 1 row alone, 2-4 rows in
    // one pass (rows past them skipped), 5 and 8 rows in two passes. 9 and 70 rows: the tensor cores or the tile.
    for (auto [in, out] : {std::pair<int64_t, int64_t>{96, 130}, {50, 130}, {2048 + 96, 21}, {96 + 16, 13}, {208, 130},
                           {400, 70}, {56, 70}, {48, 13}, {24, 13}}) {
      for (int64_t M : {1, 2, 3, 5, 8, 9, 70}) {
        const StoredWeight w(randn(static_cast<size_t>(out * in), ++seed, 0.1f), {out, in}, dtype, 0.002f);
        std::vector<float> x = randn(static_cast<size_t>(M * in), ++seed);
        const std::vector<float> want = vec(cpu_.matmul(host(x, {M, in}), w.weight, host_arena_));
        for (size_t offset : {0, 1}) {
          if (offset == 1 && M > 8) continue;  // unaligned x: the small-M kernel's scalar loads
          const std::vector<float> got = down(gpu_->matmul(up(x, {M, in}, offset), prep(w), *dev_arena_));
          EXPECT_LE(rel_l2(got, want), kF32RelL2) << dtype_name(dtype) << " M=" << M << " in=" << in << " out=" << out
                                                  << " x offset " << offset;
        }
      }
    }
  }
}

// For BF16 and FP8 weights of each shape (in, out) and each row count: the matmul with the small tensor-core kernel
// off (the kernel that runs instead: `off_name`) and forced on, both against the CPU within kF32RelL2 (times K/2048
// past 2048 when `bound_grows_with_k`: the tensor cores' fp32 accumulation), and the forced-on call twice the same bits.
void expect_small_tc_matches(CudaMatmul& t, std::initializer_list<std::pair<int64_t, int64_t>> shapes,
                             std::initializer_list<int64_t> rows, uint64_t seed, bool bound_grows_with_k,
                             const char* off_name) {
  const ResetKernelSwitches reset;
  for (DType dtype : {DType::BF16, DType::F8_E4M3}) {
    for (auto [in, out] : shapes) {
      const StoredWeight w(randn(static_cast<size_t>(out * in), ++seed, 0.1f), {out, in}, dtype, 0.002f);
      const Weight wd = t.prep(w);
      const double bound = kF32RelL2 * (bound_grows_with_k ? std::max(1.0, static_cast<double>(in) / 2048.0) : 1.0);
      for (int64_t M : rows) {
        std::vector<float> x = randn(static_cast<size_t>(M * in), ++seed);
        const std::vector<float> want = t.cpu_matmul(x, M, in, w);
        const Tensor xd = t.upload(x, M, in);
        set_small_tc_for_tests(0);
        const std::vector<float> off = t.gpu_matmul(xd, wd);
        set_small_tc_for_tests(1);
        const std::vector<float> tc = t.gpu_matmul(xd, wd);
        const std::string what = std::string(dtype_name(dtype)) + " M=" + std::to_string(M) + " in=" +
                                 std::to_string(in) + " out=" + std::to_string(out);
        EXPECT_LE(rel_l2(off, want), bound) << off_name << " " << what;
        EXPECT_LE(rel_l2(tc, want), bound) << "small tensor cores " << what;
        EXPECT_EQ(t.gpu_matmul(xd, wd), tc) << "deterministic " << what;
      }
    }
  }
}

// The small tensor-core kernel (2-8 rows, BF16/FP8 weights, swap AB) against the CPU and against the FMA kernel
// (forced off, then forced on wherever it runs, 1 row included): N not a multiple of a warp's 32 columns, K tails
// (K % 64 != 0), 1..8 k slices a column (small N, long K); the same call twice gives the same bits.
TEST_F(CudaMatmul, SmallTensorCoreMatmulMatchesCpuAndFmaKernel) {
  expect_small_tc_matches(*this, {{96 + 16, 13}, {2048 + 96, 21}, {4096 + 48, 300}, {208, 130}, {400, 70}, {1024, 520}, {64, 16}},
                          {1, 2, 3, 5, 8}, 700, false, "CUDA-core kernel");
}

// Plain problems of 9-64 rows on the small tensor-core kernel (2, 4 or 8 row blocks of 8 in one pass over the
// weights) against the CPU and against the large-M tensor-core kernel (forced off): N not a multiple of a warp's
// columns, K tails, 1..8 k slices a column; the bound grows with K (fp32 accumulation on the tensor cores); the same
// call twice gives the same bits.
TEST_F(CudaMatmul, SmallTensorCoreMatmulOfUpTo64RowsMatchesCpu) {
  expect_small_tc_matches(*this, {{96 + 16, 13}, {2048 + 96, 21}, {4096 + 48, 300}, {208, 130}, {1024, 520}, {64, 16}},
                          {9, 16, 17, 33, 64}, 800, true, "large-M kernel");
}

// The small-M kernel adds a column's partial sums in a fixed order (its 4 lanes, then its warps in warp order):
// the same matmul twice gives the same bits, on 1, 2, 4 and 8 warps a column.
TEST_F(CudaMatmul, SmallMMatmulIsDeterministic) {
  uint64_t seed = 900;
  for (auto [in, out] : {std::pair<int64_t, int64_t>{96, 130}, {208, 130}, {400, 70}, {2048 + 96, 21}}) {
    const StoredWeight w(randn(static_cast<size_t>(out * in), ++seed, 0.1f), {out, in}, DType::F8_E4M3, 0.002f);
    const Weight wd = prep(w);
    for (int64_t M : {1, 8}) {
      const Tensor x = up(randn(static_cast<size_t>(M * in), ++seed), {M, in});
      const std::vector<float> first = down(gpu_->matmul(x, wd, *dev_arena_));
      EXPECT_EQ(down(gpu_->matmul(x, wd, *dev_arena_)), first) << "M=" << M << " in=" << in << " out=" << out;
    }
  }
}

// Plain problems on the large-M tensor-core tile whose tiles leave SMs idle are split over K (partials summed in
// order by a second kernel): the router's and kv_a's shapes at 256 rows, 65 and 100 rows, an FFN (gate and up in one
// launch, then down) and matmul_add (the residual add in the sum kernel's store, bit for bit add_to's). Against the
// CPU; every case must split (matmul_workspace_floats > 0), and the same call twice gives the same bits.
TEST_F(CudaMatmul, MatmulSplitOverKMatchesCpu) {
  uint64_t seed = 900;
  for (DType dtype : {DType::BF16, DType::F8_E4M3}) {
    for (auto [M, in, out] : {std::tuple<int64_t, int64_t, int64_t>{256, 4096, 128}, {256, 4096, 320}, {65, 1024, 200},
                              {100, 2048 + 96, 70}}) {
      const StoredWeight w(randn(static_cast<size_t>(out * in), ++seed, 0.1f), {out, in}, dtype, 0.002f);
      const Weight wd = prep(w);
      std::vector<float> x = randn(static_cast<size_t>(M * in), ++seed);
      const std::string what = std::string(dtype_name(dtype)) + " M=" + std::to_string(M) + " in=" + std::to_string(in) +
                               " out=" + std::to_string(out);
      const MatmulProblem p{.x = nullptr, .ldx = in, .M = M, .N = out, .K = in, .weight = {.type = wd.w.dtype() == DType::BF16 ? WType::kBF16 : WType::kF8E4M3}};
      EXPECT_GT(matmul_workspace_floats(p), 0) << "the case must split: " << what;
      const std::vector<float> want = cpu_matmul(x, M, in, w);
      const Tensor xd = upload(x, M, in);
      const std::vector<float> got = gpu_matmul(xd, wd);
      EXPECT_LE(rel_l2(got, want), kF32RelL2 * std::max(1.0, static_cast<double>(in) / 2048.0)) << what;
      EXPECT_EQ(gpu_matmul(xd, wd), got) << "deterministic " << what;
      const std::vector<float> y0 = randn(static_cast<size_t>(M * out), ++seed);
      const Tensor y = up(y0, {M, out});
      gpu_->matmul_add(y, xd, wd, *dev_arena_);
      const std::vector<float> sum = down(y);
      for (size_t i = 0; i < sum.size(); ++i) ASSERT_EQ(sum[i], y0[i] + got[i]) << "matmul_add " << what << " " << i;
    }
  }
  const int64_t M = 200, D = 1024, F = 256;  // gate+up: 2 x 4 x 2 tiles, split
  const auto ex = experts(1, D, F, DType::F8_E4M3);
  const std::vector<FfnWeights> dev_ffn = ex.on(*gpu_);
  std::vector<float> x = randn(static_cast<size_t>(M * D), ++seed);
  const std::vector<float> want = vec(cpu_.ffn(host(x, {M, D}), ex.ffn[0], host_arena_));
  EXPECT_LE(rel_l2(down(gpu_->ffn(up(x, {M, D}), dev_ffn[0], *dev_arena_)), want), kF32RelL2) << "ffn";
}

// launch_matmul's SiLU-gated gate+up (silu_gate): y = silu(x·gateᵀ) ⊙ (x·upᵀ) bit for bit as the two problems then
// the gating kernel: in one pass on the staged kernel (rows of 512-4096 bytes: D = 256 BF16, 1024, 4096 FP8, as
// staged_applies must say; F = 13: a tile past the last column; 1 row, and 3 and 5 rows with the small tensor-core
// kernel off; also in the staged kernel's streamed form on 3 blocks, gated and as two problems a launch) and on the
// FMA kernel (the other shapes, or the staged kernel off; 3 and 5 rows: the 2-4-row passes and the plain 5-8-row
// kernel; K slices over 1 warp (F = 8192) or 8), the gating after the product elsewhere (3 and 5 rows on the small
// tensor-core kernel, 70 on the tile). The FFN and MoE tests run it through the ops (routed groups of one row).
TEST_F(CudaMatmul, SiluGatedMatmulEqualsTheTwoProblemsThenTheGating) {
  const ResetKernelSwitches reset;
  set_staged_long_rows_for_tests(0);  // (rows of 8192 bytes: StagedLongRowsMatchCpu)
  uint64_t seed = 1200;
  for (DType dtype : {DType::BF16, DType::F8_E4M3}) {
    for (auto [D, F] : {std::pair<int64_t, int64_t>{256, 96}, {4096, 40}, {96, 130}, {256, 8192}, {1024, 130}, {1024, 13}}) {
      const StoredWeight gate(randn(static_cast<size_t>(F * D), ++seed, 0.1f), {F, D}, dtype, 0.002f);
      const StoredWeight up_w(randn(static_cast<size_t>(F * D), ++seed, 0.1f), {F, D}, dtype, 0.003f);
      const Weight gd = prep(gate), ud = prep(up_w);
      for (int64_t M : {1, 3, 5, 70}) {
        for (auto [small_tc, staged, stream] :
             {std::tuple{-1, 1, 0}, {0, 1, 0}, {-1, 0, 0}, {0, 0, 0}, {0, 1, 2}, {0, 1, 3}}) {
          set_small_tc_for_tests(small_tc);
          set_staged_for_tests(staged, 0, stream, 3);
          const std::vector<float> x = randn(static_cast<size_t>(M * D), ++seed);
          const Tensor xd = up(x, {M, D});
          const std::vector<float> zeros(static_cast<size_t>(M * F), 0.0f);
          Tensor y = up(zeros, {M, F}), y2 = up(zeros, {M, F}), g = up(zeros, {M, F}), u = up(zeros, {M, F});
          MatmulProblem p{.x = xd.data_as<float>(), .ldx = D, .M = M, .N = F, .K = D, .weight = dev(gd, "gate"),
                          .y = y.data_as<float>(), .ldy = F, .weight2 = dev(ud, "up"), .y2 = y2.data_as<float>(),
                          .silu_gate = true};
          const int64_t row_bytes = D * (dtype == DType::BF16 ? 2 : 1);
          EXPECT_EQ(staged_applies(p), staged == 1 && row_bytes >= 512 && row_bytes <= 4096) << "D=" << D;
          ASSERT_EQ(launch_matmul(p, nullptr), cudaSuccess);
          p.silu_gate = false, p.y = g.data_as<float>(), p.y2 = u.data_as<float>();
          ASSERT_EQ(launch_matmul(p, nullptr), cudaSuccess);
          ASSERT_EQ(launch_silu_mul(g.data_as<float>(), u.data_as<float>(), M * F, nullptr), cudaSuccess);
          ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
          EXPECT_EQ(down(y), down(g)) << dtype_name(dtype) << " D=" << D << " F=" << F << " M=" << M
                                      << " small_tc " << small_tc << " staged " << staged;
        }
      }
    }
  }
}


// The staged kernel against the CPU and against the FMA kernel (staged off), on 4, 8 and 16 pieces a thread: every
// row length it takes (FP8 K = 512..4096, BF16 256..2048), N not a multiple of a tile's rows and past a few tiles,
// 1 row, and 2, 5 and 8 rows a group with the small tensor cores off (each row against the tile in shared memory);
// the same call twice gives the same bits, and the streamed form (2 and 3 stages, its grid whole or capped at 1 and
// 7 blocks) the staged grid's.
TEST_F(CudaMatmul, StagedMatmulMatchesCpuAndFmaKernel) {
  const ResetKernelSwitches reset;
  set_small_tc_for_tests(0);
  uint64_t seed = 1500;
  for (DType dtype : {DType::BF16, DType::F8_E4M3}) {
    const std::vector<int64_t> lengths = dtype == DType::BF16 ? std::vector<int64_t>{256, 512, 1024, 2048}
                                                              : std::vector<int64_t>{512, 1024, 2048, 4096};
    for (int64_t in : lengths) {
      for (int64_t out : {13, 130, 1000}) {
        const StoredWeight w(randn(static_cast<size_t>(out * in), ++seed, 0.1f), {out, in}, dtype, 0.002f);
        const Weight wd = prep(w);
        for (int64_t M : {1, 2, 5, 8}) {
          std::vector<float> x = randn(static_cast<size_t>(M * in), ++seed);
          const std::vector<float> want = cpu_matmul(x, M, in, w);
          const Tensor xd = upload(x, M, in);
          const std::string what = std::string(dtype_name(dtype)) + " M=" + std::to_string(M) + " in=" +
                                   std::to_string(in) + " out=" + std::to_string(out);
          const MatmulProblem p{.x = xd.data_as<float>(), .ldx = in, .M = M, .N = out, .K = in, .weight = dev(wd, "w")};
          set_staged_for_tests(0);
          EXPECT_FALSE(staged_applies(p)) << what;
          EXPECT_LE(rel_l2(gpu_matmul(xd, wd), want), kF32RelL2) << "FMA kernel " << what;
          std::vector<float> staged;
          for (int pieces : {0, 4, 8, 16}) {  // 0: as the launch chooses
            set_staged_for_tests(1, pieces, 0);
            ASSERT_TRUE(staged_applies(p)) << what;
            const std::string how = "staged (" + std::to_string(pieces) + " pieces), ";
            const std::vector<float> got = gpu_matmul(xd, wd);
            EXPECT_LE(rel_l2(got, want), kF32RelL2) << how << what;
            EXPECT_EQ(gpu_matmul(xd, wd), got) << "deterministic, " << how << what;
            if (pieces == 0) staged = got;
          }
          // The streamed form: each tile's arithmetic, so the staged grid's bits; its grid capped at 1 and 7 blocks
          // too (each block then walks many tiles through its stages).
          for (int stages : {2, 3}) {
            for (int cap : {0, 1, 7}) {
              set_staged_for_tests(1, 0, stages, cap);
              EXPECT_EQ(gpu_matmul(xd, wd), staged) << "streamed in " << stages << " stages on " << cap << " blocks, "
                                                    << what;
            }
          }
        }
      }
    }
  }
}

// Rows of 8192 bytes (BF16 K = 4096: the lm_head and router; FP8 K = 8192) on the staged kernel, two passes of its
// threads a row (QUATRE_CUDA_STAGED_LONG_ROWS=1): off by default (the FMA kernel takes them); on, against the CPU at 1
// row and 3 (small tensor cores off), N past a tile's rows, every tile size; the SiLU-gated problem bit for bit as the
// two problems in one launch then the gating; the streamed form (whole, and on 3 blocks) the staged grid's bits.
TEST_F(CudaMatmul, StagedLongRowsMatchCpu) {
  const ResetKernelSwitches reset;
  set_small_tc_for_tests(0);
  uint64_t seed = 1900;
  for (auto [dtype, in] : {std::pair{DType::BF16, int64_t{4096}}, {DType::F8_E4M3, int64_t{8192}}}) {
    for (int64_t out : {13, 130}) {
      const StoredWeight w(randn(static_cast<size_t>(out * in), ++seed, 0.1f), {out, in}, dtype, 0.002f);
      const StoredWeight w2(randn(static_cast<size_t>(out * in), ++seed, 0.1f), {out, in}, dtype, 0.003f);
      const Weight wd = prep(w), wd2 = prep(w2);
      for (int64_t M : {1, 3}) {
        std::vector<float> x = randn(static_cast<size_t>(M * in), ++seed);
        const std::vector<float> want = cpu_matmul(x, M, in, w);
        const Tensor xd = upload(x, M, in);
        const std::string what = std::string(dtype_name(dtype)) + " M=" + std::to_string(M) + " out=" +
                                 std::to_string(out);
        const MatmulProblem p{.x = xd.data_as<float>(), .ldx = in, .M = M, .N = out, .K = in, .weight = dev(wd, "w")};
        set_staged_for_tests(1);
        if (std::getenv("QUATRE_CUDA_STAGED_LONG_ROWS") == nullptr) {
          set_staged_long_rows_for_tests(-1);
          EXPECT_FALSE(staged_applies(p)) << "long rows are opt-in, " << what;
        }
        set_staged_long_rows_for_tests(0);
        EXPECT_FALSE(staged_applies(p)) << what;
        set_staged_long_rows_for_tests(1);
        ASSERT_TRUE(staged_applies(p)) << what;
        std::vector<float> staged;
        for (int pieces : {0, 4, 8, 16}) {
          set_staged_for_tests(1, pieces, 0);
          const std::vector<float> got = gpu_matmul(xd, wd);
          EXPECT_LE(rel_l2(got, want), kF32RelL2) << pieces << " pieces, " << what;
          if (pieces == 0) staged = got;
        }
        for (int stages : {2, 3}) {
          for (int cap : {0, 3}) {
            set_staged_for_tests(1, 0, stages, cap);
            EXPECT_EQ(gpu_matmul(xd, wd), staged) << "streamed in " << stages << " stages on " << cap << " blocks, "
                                                  << what;
          }
        }
        // silu(x·wᵀ) ⊙ (x·w2ᵀ): one gated pass against two problems then the gating, every tile size.
        for (auto [pieces, stages] : {std::pair{0, 0}, {4, 0}, {16, 0}, {0, 2}, {0, 3}}) {
          set_staged_for_tests(1, pieces, stages, 3);
          const std::vector<float> zeros(static_cast<size_t>(M * out), 0.0f);
          Tensor y = up(zeros, {M, out}), y2 = up(zeros, {M, out}), g = up(zeros, {M, out}), u = up(zeros, {M, out});
          MatmulProblem q = p;
          q.y = y.data_as<float>(), q.ldy = out, q.weight2 = dev(wd2, "up"), q.y2 = y2.data_as<float>();
          q.silu_gate = true;
          ASSERT_EQ(launch_matmul(q, nullptr), cudaSuccess);
          q.silu_gate = false, q.y = g.data_as<float>(), q.y2 = u.data_as<float>();
          ASSERT_EQ(launch_matmul(q, nullptr), cudaSuccess);
          ASSERT_EQ(launch_silu_mul(g.data_as<float>(), u.data_as<float>(), M * out, nullptr), cudaSuccess);
          ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
          EXPECT_EQ(down(y), down(g)) << "gated, " << pieces << " pieces, streamed " << stages << ", " << what;
          EXPECT_LE(rel_l2(down(u), cpu_matmul(x, M, in, w2)), kF32RelL2) << "the second problem, " << what;
        }
      }
    }
  }
}

// The MoE and the FFN where every linear is on the staged kernel (FP8 and BF16 rows of 512-1024 bytes): one token
// (one-row groups; gate+up SiLU-gated in one launch, the down with the gates as row scale into scattered rows, the
// shared expert beside it, a residual), and three tokens with the small tensor cores off (groups of several rows,
// padding rows skipped), against the CPU and against the FMA kernel (staged_applies asserted on the shared expert);
// as dependent launches and in the streamed form (2 and 3 stages; its grid capped at 1 and 3 blocks too, so blocks
// walk padding groups' tiles and real ones), the staged grid's bits.
TEST_F(CudaMatmul, MoeOnTheStagedKernelMatchesCpu) {
  const ResetKernelSwitches reset;
  const int64_t D = 512, F = 512, E = 6, K = 2;
  for (DType dtype : {DType::BF16, DType::F8_E4M3}) {
    const auto ex = experts(E + 1, D, F, dtype);  // the last is the shared expert
    const RoutedAndShared both(ex, *gpu_);
    for (int64_t T : {1, 3}) {
      set_small_tc_for_tests(T == 1 ? -1 : 0);
      const Routed in = routed(T, D, E, K, static_cast<uint64_t>(70 + T), static_cast<uint64_t>(80 + T));
      const Tensor &xc = in.xc, &xg = in.xg;
      const Routing& rc = in.rc;
      const std::string what = std::string(dtype_name(dtype)) + " T=" + std::to_string(T);
      const std::vector<float> r0 = randn(static_cast<size_t>(T * D), static_cast<uint64_t>(90 + T));
      std::vector<float> want = vec(cpu_.moe({.x = xc, .routing = rc, .experts = both.cpu_routed, .shared = &ex.ffn[E]},
                                             host_arena_));
      for (size_t i = 0; i < want.size(); ++i) want[i] += r0[i];
      const std::vector<float> ffn_want = vec(cpu_.ffn(xc, ex.ffn[E], host_arena_));
      std::vector<float> pdl_off;
      for (auto [staged, pdl, stream, cap] : {std::tuple{0, 0, 0, 0}, {1, 0, 0, 0}, {1, 1, 0, 0}, {1, 0, 2, 0},
                                              {1, 1, 2, 0}, {1, 1, 3, 0}, {1, 1, 2, 3}, {1, 0, 3, 1}}) {
        set_staged_for_tests(staged, 0, stream, cap);
        set_pdl_for_tests(pdl);  // as dependents (pdl.cuh): gate+up waits for the routing, down copies early
        const MatmulProblem shared_gate{.x = in.xg.data_as<float>(), .ldx = D, .M = T, .N = F, .K = D,
                                        .weight = dev(both.dev[E].gate, "gate")};
        ASSERT_EQ(staged_applies(shared_gate), staged == 1) << what;
        // The routing again, right before the MoE on the same stream (no sync between: the uploads come first), so
        // that with dependent launches gate+up starts behind the routing kernel and down behind gate+up.
        const Tensor res = up(r0, {T, D});
        const Tensor logits = up(randn(static_cast<size_t>(T * E), static_cast<uint64_t>(80 + T)), {T, E});
        const Routing live = gpu_->route(logits, {.n_experts_per_tok = K, .routed_scaling_factor = 2.0f}, *dev_arena_);
        gpu_->moe({.x = xg, .routing = live, .experts = both.gpu_routed, .shared = &both.dev[E], .residual = &res},
                  *dev_arena_);
        EXPECT_LE(rel_l2(down(res), want), kF32RelL2) << "moe, staged " << staged << ", " << what;
        if (staged == 1 && pdl == 0 && stream == 0) pdl_off = down(res);
        if (pdl == 1 || stream != 0) {
          EXPECT_EQ(down(res), pdl_off) << "moe as dependent launches " << pdl << ", streamed " << stream << " on "
                                        << cap << " blocks, " << what;
        }
        EXPECT_LE(rel_l2(down(gpu_->ffn(xg, both.dev[E], *dev_arena_)), ffn_want), kF32RelL2)
            << "ffn, staged " << staged << ", " << what;
      }
    }
  }
}

// Programmatic dependent launch (pdl.cuh): a chain of one-row layers, each an RMSNorm (which lets the matmul behind it
// start), a staged matmul, and a second staged matmul reading the first's output, launched as dependents gives the
// plain launches' bits, eagerly (many times) and replayed from a CUDA graph, the staged grid and its streamed form
// (2 and 3 stages, whole and on 5 blocks). Every intermediate starts as NaN: a matmul that read its input before the
// kernel ahead of it finished would show.
TEST_F(CudaMatmul, StagedMatmulsLaunchedAsDependentsEqualPlainLaunches) {
  const ResetKernelSwitches reset;
  set_staged_for_tests(1);
  constexpr int64_t D = 1024, kLayers = 4;
  constexpr float kEps = 1e-6f;
  std::vector<Weight> w;
  for (int i = 0; i < 2 * kLayers; ++i) {
    const StoredWeight s(randn(static_cast<size_t>(D * D), 1700 + i, 0.1f), {D, D}, DType::F8_E4M3, 0.002f);
    w.push_back(prep(s));
  }
  const StoredWeight g_stored(randn(static_cast<size_t>(D), 1720, 0.5f), {D}, DType::BF16);
  const DevWeight g = dev(prep(g_stored), "norm");
  const Tensor x = up(randn(static_cast<size_t>(D), 1721), {1, D});
  std::vector<Tensor> mid;  // per layer: the norm's output, the first product, the second
  for (int i = 0; i < 3 * kLayers; ++i) mid.push_back(up(std::vector<float>(static_cast<size_t>(D)), {1, D}));
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  const auto enqueue = [&] {
    // (EXPECT, not ASSERT: a failure must not leave a graph capture open.)
    for (const Tensor& t : mid) EXPECT_EQ(launch_fill(t.data_as<float>(), D, std::nanf(""), stream), cudaSuccess);
    const float* in = x.data_as<float>();
    for (int l = 0; l < kLayers; ++l) {
      float* h = mid[3 * l].data_as<float>();
      EXPECT_EQ(launch_rms_norm(in, 1, D, g, kEps, h, stream), cudaSuccess);
      for (int j = 0; j < 2; ++j) {
        float* y = mid[3 * l + 1 + j].data_as<float>();
        const MatmulProblem p{.x = j == 0 ? h : mid[3 * l + 1].data_as<float>(), .ldx = D, .M = 1, .N = D, .K = D,
                              .weight = dev(w[2 * l + j], "w"), .y = y, .ldy = D};
        EXPECT_TRUE(staged_applies(p));
        EXPECT_EQ(launch_matmul(p, stream), cudaSuccess);
      }
      in = mid[3 * l + 2].data_as<float>();
    }
  };
  const auto run = [&](int pdl, bool graph) {
    set_pdl_for_tests(pdl);
    EXPECT_EQ(pdl_enabled(), pdl == 1);
    if (!graph) {
      enqueue();
    } else {
      cudaGraph_t captured = nullptr;
      cudaGraphExec_t exec = nullptr;
      EXPECT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), cudaSuccess);  // as step_graphs.cpp
      enqueue();
      EXPECT_EQ(cudaStreamEndCapture(stream, &captured), cudaSuccess);
      EXPECT_EQ(cudaGraphInstantiate(&exec, captured, 0), cudaSuccess);
      EXPECT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
      EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
      EXPECT_EQ(cudaGraphDestroy(captured), cudaSuccess);
    }
    EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    std::vector<float> all;
    for (const Tensor& t : mid) {
      const std::vector<float> v = down(t);
      all.insert(all.end(), v.begin(), v.end());
    }
    return all;
  };
  const std::vector<float> plain = run(0, false);
  ASSERT_TRUE(std::none_of(plain.begin(), plain.end(), [](float v) { return std::isnan(v) || std::isinf(v); }));
  for (auto [stages, cap] : {std::pair{0, 0}, {2, 0}, {3, 0}, {2, 5}, {3, 5}}) {  // the staged grid, the streamed form
    set_staged_for_tests(1, 0, stages, cap);
    for (int i = 0; i < 20; ++i) ASSERT_EQ(run(1, false), plain) << "eager, run " << i << ", streamed " << stages;
    for (int i = 0; i < 3; ++i) ASSERT_EQ(run(1, true), plain) << "graph, run " << i << ", streamed " << stages;
    EXPECT_EQ(run(0, true), plain) << "streamed " << stages;
  }
  EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
}

// W8A8 (static activation scales, core/backend.h): FP8 weights whose input every kernel quantises to fp8(x / a)
// before the product, against the CPU backend's W8A8 (x / a rounded the same: correctly rounded division, then
// E4M3 round-to-nearest-even with saturation), so only the summation order differs. Every kernel that takes FP8
// weights: the FMA kernel (small tensor cores and staged off), the staged kernel (one row), the small tensor
// cores (2-64 rows), the large-M FP8 mma kernel and, forced off, the three-term one (past 64 rows, which must then
// give other bits: the switch changes the kernel); cuBLASLt off (its own tests below); K tails (K % 16 != 0: the three-term kernel). a = 3.5/448 saturates the
// inputs past ±3.5 (a few in ten thousand). The W8A8 result must be visibly not the W8A16 one (else the quantisation
// would not be tested). The FP8 mma sums its 32 products with ~14 bits of alignment before the fp32 add (mma_fp8):
// its own bound, kFp8MmaRelL2.
constexpr double kFp8MmaRelL2 = 1e-4;

// cuBLASLt's FP8 GEMM (wgmma) keeps fewer bits of its running sums than the mma.sync kernels (which add each 32
// products into fp32): 1.26e-4 to 1.29e-4 from the CPU on an H100, at every K from 512 to 4096. An FFN or MoE
// requantises its hidden h to FP8 (3 mantissa bits) for down: those differences send a few in a thousand of h's
// roundings the other way, each a step of 1/16 to 1/8 of the value, so their outputs are further off (2.6e-3 and
// 1.9e-3 measured): their own bound. A wrong scale, operand order or row would be off by 1e-1 or more.
constexpr double kLtRelL2 = 2.5e-4;
constexpr double kLtGatedRelL2 = 6e-3;

// Large plain W8A8 problems through cuBLASLt (gemm_lt.h: our FP8 quantisation of x, its FP8 GEMM with fp32 sums
// and output) against the CPU's W8A8 and against the FP8 mma kernel (other bits: the switch changes the path):
// 256-1024 rows, y = and y +=, N and K multiples of 16 (a K of 2144 and an N of 304 included), and the SiLU-gated
// FFN (gate and up in two GEMMs, then the gating). Below 256 rows, or with a K that is not a multiple of 16, the
// mma.sync kernels keep the problem (the same bits with the switch on or off).
TEST_F(CudaMatmul, CublasLtW8A8MatchesCpuAndTheMmaKernel) {
  const ResetKernelSwitches reset;
  uint64_t seed = 2600;
  for (auto [in, out] : {std::pair<int64_t, int64_t>{512, 160}, {2048 + 96, 304}, {4096, 1024}, {208 + 8, 144}}) {
    StoredWeight w(randn(static_cast<size_t>(out * in), ++seed, 0.1f), {out, in}, DType::F8_E4M3, 0.002f);
    w.weight.activation_scale = 3.5f / 448.0f;
    const Weight wd = prep(w);
    for (int64_t M : {100, 256, 300, 1024}) {
      std::vector<float> x = randn(static_cast<size_t>(M * in), ++seed);
      const std::vector<float> want = cpu_matmul(x, M, in, w);
      const Tensor xd = upload(x, M, in);
      const std::string what = "M=" + std::to_string(M) + " in=" + std::to_string(in) + " out=" + std::to_string(out);
      set_cublaslt_for_tests(0);
      const std::vector<float> mma = gpu_matmul(xd, wd);
      set_cublaslt_for_tests(1);
      const std::vector<float> lt = gpu_matmul(xd, wd);
      EXPECT_LE(rel_l2(lt, want), kLtRelL2) << "cublaslt " << what;
      if (M >= 256 && in % 16 == 0) {
        EXPECT_NE(lt, mma) << "the switch must move " << what << " to cuBLASLt";
      } else {
        EXPECT_EQ(lt, mma) << what << " stays on the mma.sync kernels";
      }
      // y += x · wᵀ onto the product itself: twice it.
      Tensor acc = up(lt, {M, out});
      gpu_->matmul_add(acc, xd, wd, *dev_arena_);
      std::vector<float> twice = want;
      for (float& v : twice) v *= 2.0f;
      EXPECT_LE(rel_l2(down(acc), twice), kLtRelL2) << "cublaslt accumulate " << what;
    }
  }
  // The FFN (gate+up with the SiLU gating, then down) at 300 rows.
  const int64_t D = 512, F = 256, T = 300;
  auto ex = experts(1, D, F, DType::F8_E4M3);
  ex.ffn[0].gate.activation_scale = ex.ffn[0].up.activation_scale = 3.0f / 448.0f;
  ex.ffn[0].down.activation_scale = 20.0f / 448.0f;
  const std::vector<FfnWeights> dev = ex.on(*gpu_);
  std::vector<float> x = randn(static_cast<size_t>(T * D), 2700);
  const std::vector<float> want = vec(cpu_.ffn(host(x, {T, D}), ex.ffn[0], host_arena_));
  set_cublaslt_for_tests(0);
  const std::vector<float> mma = down(gpu_->ffn(up(x, {T, D}), dev[0], *dev_arena_));
  set_cublaslt_for_tests(1);
  const std::vector<float> lt = down(gpu_->ffn(up(x, {T, D}), dev[0], *dev_arena_));
  EXPECT_LE(rel_l2(lt, want), kLtGatedRelL2) << "ffn through cublaslt";
  EXPECT_NE(lt, mma) << "ffn through cublaslt";
}

// A prompt's routed W8A8 experts through cuBLASLt (cuda_backend_moe.cpp routed_experts_lt: the grouping read back,
// each expert's rows through the FP8 GEMM, its own activation scales), with a shared expert, against the CPU and
// against the grouped mma kernels (other bits); fewer pairs than the path's minimum stay on the mma kernels (the
// same bits). The shared expert is W8A16, which cuBLASLt never takes: only the routed path can change the bits. The
// experts' GEMMs spread over 1, 3 or 4 lanes (side streams) give the same bits; so do the pointer-array batches of
// the experts with as many rows (2100 tokens: ~700 rows each, two or three shapes), over 1 or 3 lanes.
TEST_F(CudaMatmul, CublasLtRoutedExpertsMatchCpu) {
  const ResetKernelSwitches reset;
  const int64_t D = 512, F = 256, E = 6, K = 2;
  auto ex = experts(E + 1, D, F, DType::F8_E4M3);  // the last is the shared expert
  for (size_t e = 0; e + 1 < ex.ffn.size(); ++e) {
    const float a = (2.0f + 0.5f * static_cast<float>(e)) / 448.0f;
    ex.ffn[e].gate.activation_scale = ex.ffn[e].up.activation_scale = a;
    ex.ffn[e].down.activation_scale = 8.0f * a;
  }
  const RoutedAndShared both(ex, *gpu_);
  for (int64_t T : {2100, 300}) {  // 4200 pairs take the path; 600 do not
    const Routed in = routed(T, D, E, K, static_cast<uint64_t>(900 + T), static_cast<uint64_t>(901 + T));
    const std::vector<float> want =
        vec(cpu_.moe({.x = in.xc, .routing = in.rc, .experts = both.cpu_routed, .shared = &ex.ffn[E]}, host_arena_));
    const auto run = [&] {
      return down(gpu_->moe({.x = in.xg, .routing = in.rg, .experts = both.gpu_routed, .shared = &both.dev[E]}, *dev_arena_));
    };
    std::vector<float> got[2];
    for (int lt : {0, 1}) {
      set_cublaslt_for_tests(lt, 1, 0);
      got[lt] = run();
      EXPECT_LE(rel_l2(got[lt], want), lt == 1 && T * K >= 4096 ? kLtGatedRelL2 : kFp8MmaRelL2)
          << "T=" << T << " cublaslt " << lt;
    }
    for (int lanes : {3, 4}) {
      set_cublaslt_for_tests(1, lanes, 0);
      EXPECT_EQ(run(), got[1]) << "T=" << T << " over " << lanes << " lanes";
    }
    // The experts of one row count in one pointer-array GEMM (their scales applied after it), over 1 and 3 lanes.
    set_cublaslt_for_tests(1, 1, 1);
    const std::vector<float> batched = run();
    EXPECT_LE(rel_l2(batched, want), T * K >= 4096 ? kLtGatedRelL2 : kFp8MmaRelL2) << "T=" << T << " batched";
    if (T * K < 4096) {
      EXPECT_EQ(batched, got[0]) << "T=" << T << ": too few pairs for cuBLASLt";
    }
    set_cublaslt_for_tests(1, 3, 1);
    EXPECT_EQ(run(), batched) << "T=" << T << " batched over 3 lanes";
    if (T * K >= 4096) {
      EXPECT_NE(got[1], got[0]) << "T=" << T << ": the switch must move the experts to cuBLASLt";
    } else {
      EXPECT_EQ(got[1], got[0]) << "T=" << T << ": too few pairs for cuBLASLt";
    }
  }
}

// The cuBLASLt MoE's one-pass gating and quantisation (launch_silu_mul_quantize_fp8) gives the bytes of the two
// passes it replaces (launch_silu_mul, then launch_quantize_fp8_rows with each group's scale), a scale a group of G
// rows, past ±448 saturating.
TEST_F(CudaMatmul, SiluMulQuantizeIsTheTwoPassesInOne) {
  const int64_t M = 130, K = 96;
  const int G = 64;
  std::vector<float> g = randn(static_cast<size_t>(M * K), 31, 3.0f), u = randn(static_cast<size_t>(M * K), 32, 3.0f);
  const std::vector<float> scale = {2.0f / 448.0f, 0.5f / 448.0f, 9.0f / 448.0f};  // groups of rows 0-63, 64-127, 128-129
  const Tensor gd = up(g, {M, K}), ud = up(u, {M, K}), sd = up(scale, {3}), gd2 = up(g, {M, K});
  uint8_t* out = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&out), static_cast<size_t>(2 * M * K)), cudaSuccess);
  const cudaStream_t s = nullptr;
  EXPECT_EQ(launch_silu_mul_quantize_fp8(gd.data_as<float>(), ud.data_as<float>(), M, K, sd.data_as<float>(), G, out, s),
            cudaSuccess);
  EXPECT_EQ(launch_silu_mul(gd2.data_as<float>(), ud.data_as<float>(), M * K, s), cudaSuccess);
  EXPECT_EQ(launch_quantize_fp8_rows(gd2.data_as<float>(), K, nullptr, M, K, sd.data_as<float>(), G, 0.0f, out + M * K, s),
            cudaSuccess);
  std::vector<uint8_t> both(static_cast<size_t>(2 * M * K));
  ASSERT_EQ(cudaMemcpy(both.data(), out, both.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(out);
  const std::vector<uint8_t> one(both.begin(), both.begin() + M * K), two(both.begin() + M * K, both.end());
  EXPECT_EQ(one, two);
  EXPECT_GT(std::count(one.begin(), one.end(), uint8_t{0x7E}), 0) << "some of h saturates at +448 (0x7E)";
  EXPECT_GT(std::count_if(one.begin(), one.end(), [](uint8_t b) { return (b & 0x7F) != 0; }), M * K / 2);
}

// The cuBLASLt MoE's sum (launch_sum_scaled_pairs): each pair's row gathered from the experts' rows (row_of_pair, made
// by launch_invert_rows from the grouping, padding rows skipped), times its gate, summed over k in order, then the
// shared expert's row, then onto y: bit for bit the host's fp32 arithmetic in that order (rounded products, no FMA).
TEST_F(CudaMatmul, SumOfScaledPairsIsTheHostsArithmetic) {
  const int64_t T = 37, K = 4, D = 4096 + 64, n_rows = T * K + 19;  // 19 padding rows among them
  std::vector<int32_t> sorted_pair(static_cast<size_t>(n_rows), -1);
  for (int64_t p = 0; p < T * K; ++p) sorted_pair[static_cast<size_t>((p * 53 + 7) % n_rows)] = static_cast<int32_t>(p);
  const std::vector<float> rows = randn(static_cast<size_t>(n_rows * D), 51), gates = randn(static_cast<size_t>(T * K), 52),
                           shared = randn(static_cast<size_t>(T * D), 53), y0 = randn(static_cast<size_t>(T * D), 54);
  std::vector<float> want = y0;
  std::vector<int32_t> row_of(static_cast<size_t>(T * K));
  for (int64_t r = 0; r < n_rows; ++r) {
    if (sorted_pair[static_cast<size_t>(r)] >= 0) row_of[static_cast<size_t>(sorted_pair[static_cast<size_t>(r)])] = static_cast<int32_t>(r);
  }
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < D; ++i) {
      float sum = 0.0f;
      for (int64_t k = 0; k < K; ++k) {
        const float product = rows[static_cast<size_t>(row_of[static_cast<size_t>(t * K + k)] * D + i)] * gates[static_cast<size_t>(t * K + k)];
        sum += product;
      }
      sum += shared[static_cast<size_t>(t * D + i)];
      want[static_cast<size_t>(t * D + i)] += sum;
    }
  }
  int32_t* pair_d = nullptr;
  int32_t* row_of_d = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&pair_d), sorted_pair.size() * sizeof(int32_t)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&row_of_d), row_of.size() * sizeof(int32_t)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(pair_d, sorted_pair.data(), sorted_pair.size() * sizeof(int32_t), cudaMemcpyHostToDevice), cudaSuccess);
  const Tensor rows_d = up(rows, {n_rows, D}), gates_d = up(gates, {T * K}), shared_d = up(shared, {T, D});
  Tensor y = up(y0, {T, D});
  EXPECT_EQ(launch_invert_rows(pair_d, n_rows, row_of_d, nullptr), cudaSuccess);
  EXPECT_EQ(launch_sum_scaled_pairs(rows_d.data_as<float>(), row_of_d, gates_d.data_as<float>(), T, K, D,
                                    shared_d.data_as<float>(), true, y.data_as<float>(), nullptr),
            cudaSuccess);
  std::vector<int32_t> row_of_back(row_of.size());
  ASSERT_EQ(cudaMemcpy(row_of_back.data(), row_of_d, row_of.size() * sizeof(int32_t), cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(pair_d);
  cudaFree(row_of_d);
  EXPECT_EQ(row_of_back, row_of);
  EXPECT_EQ(down(y), want);
}

TEST_F(CudaMatmul, W8A8MatmulMatchesCpuOnEveryKernel) {
  const ResetKernelSwitches reset;
  set_cublaslt_for_tests(0);  // our kernels only (cuBLASLt would take 256 rows or more: its own test above)
  uint64_t seed = 1200;
  for (auto [in, out] : {std::pair<int64_t, int64_t>{512, 130}, {2048 + 96, 300}, {400, 70}, {208 + 8, 130}, {4096, 64}}) {
    StoredWeight w(randn(static_cast<size_t>(out * in), ++seed, 0.1f), {out, in}, DType::F8_E4M3, 0.002f);
    const Weight w8a16 = w.weight;  // the host weight (the CPU's), before the activation scale makes it W8A8
    w.weight.activation_scale = 3.5f / 448.0f;
    const Weight wd = prep(w);
    const double bound = kF32RelL2 * std::max(1.0, static_cast<double>(in) / 2048.0);
    for (int64_t M : {1, 2, 5, 9, 33, 64, 70, 300}) {
      std::vector<float> x = randn(static_cast<size_t>(M * in), ++seed);
      const std::vector<float> want = cpu_matmul(x, M, in, w);
      const std::vector<float> want_w8a16 = vec(cpu_.matmul(host(x, {M, in}), w8a16, host_arena_));
      const double quantisation = rel_l2(want_w8a16, want);
      const std::string what = "M=" + std::to_string(M) + " in=" + std::to_string(in) + " out=" + std::to_string(out);
      EXPECT_GT(quantisation, 1e-3) << "W8A8 is W8A16 on the CPU: " << what;
      const Tensor xd = upload(x, M, in);
      std::vector<float> fp8_mma;
      for (auto [small_tc, staged, fp8] : {std::tuple<int, int, int>{0, 0, 1}, {0, 1, 1}, {1, 0, 1}, {1, 0, 0}}) {
        set_small_tc_for_tests(small_tc);
        set_staged_for_tests(staged);
        set_tc_fp8_for_tests(fp8);
        set_prequantize_for_tests(0);  // each kernel quantising its own loads
        const std::vector<float> on_loads = gpu_matmul(xd, wd);
        set_prequantize_for_tests(1);  // x quantised once first (from prequantize_min_rows() rows): the same bits
        const std::vector<float> got = gpu_matmul(xd, wd);
        EXPECT_EQ(got, on_loads) << "x quantised once, small tc " << small_tc << " staged " << staged << " fp8 mma "
                                 << fp8 << " " << what;
        EXPECT_LE(rel_l2(got, want), fp8 == 1 && M > 8 ? kFp8MmaRelL2 : bound)
            << "small tc " << small_tc << " staged " << staged << " fp8 mma " << fp8 << " " << what << " (W8A16 is "
            << quantisation << " away)";
        if (small_tc == 1 && fp8 == 1) fp8_mma = got;
        if (small_tc == 1 && fp8 == 0 && M > 64 && in % 16 == 0) {  // past the small tensor cores' 64 rows
          EXPECT_NE(got, fp8_mma) << "QUATRE_CUDA_TC_FP8 off must leave " << what << " to another kernel";
        }
      }
    }
  }
}

// The W8A8 FFN and MoE: each expert its own activation scales (gate and up one, down another; a token's rows meet
// several in one launch), one token (one-row groups) to 70 (groups of 64 on the FP8 mma kernel), with a shared
// expert, against the CPU; and with the FP8 mma kernel off (the three-term kernel on the same FP8 inputs).
TEST_F(CudaMatmul, W8A8MoeMatchesCpuWithAScaleAnExpert) {
  const ResetKernelSwitches reset;
  const int64_t D = 512, F = 256, E = 6, K = 2;
  auto ex = experts(E + 1, D, F, DType::F8_E4M3);  // the last is the shared expert
  for (size_t e = 0; e < ex.ffn.size(); ++e) {
    const float a = (2.0f + 0.5f * static_cast<float>(e)) / 448.0f;
    ex.ffn[e].gate.activation_scale = ex.ffn[e].up.activation_scale = a;
    ex.ffn[e].down.activation_scale = 8.0f * a;
  }
  const RoutedAndShared both(ex, *gpu_);
  for (int64_t T : {1, 3, 24, 70}) {
    const Routed in = routed(T, D, E, K, static_cast<uint64_t>(170 + T), static_cast<uint64_t>(180 + T));
    const std::vector<float> want =
        vec(cpu_.moe({.x = in.xc, .routing = in.rc, .experts = both.cpu_routed, .shared = &ex.ffn[E]}, host_arena_));
    const std::vector<float> ffn_want = vec(cpu_.ffn(in.xc, ex.ffn[E], host_arena_));
    for (int fp8 : {1, 0}) {
      set_tc_fp8_for_tests(fp8);
      const std::string what = "T=" + std::to_string(T) + " fp8 mma " + std::to_string(fp8);
      set_prequantize_for_tests(0);
      const std::vector<float> on_loads =
          down(gpu_->moe({.x = in.xg, .routing = in.rg, .experts = both.gpu_routed, .shared = &both.dev[E]}, *dev_arena_));
      set_prequantize_for_tests(-1);  // scales that differ: x quantised on the loads, the gated hidden once
      const std::vector<float> got =
          down(gpu_->moe({.x = in.xg, .routing = in.rg, .experts = both.gpu_routed, .shared = &both.dev[E]}, *dev_arena_));
      EXPECT_EQ(got, on_loads) << "inputs quantised once, " << what;
      const double bound = fp8 == 1 && T > 32 ? kFp8MmaRelL2 : kF32RelL2;  // T = 70: groups of 64, a 70-row FFN
      EXPECT_LE(rel_l2(got, want), bound) << "moe " << what;
      EXPECT_LE(rel_l2(down(gpu_->ffn(in.xg, both.dev[E], *dev_arena_)), ffn_want), bound) << "ffn " << what;
    }
  }
}

// The routed experts' W8A8 inputs quantised once (x where every gate and up share a scale; the gated hidden where
// the gating follows the products), against each kernel quantising its own loads: the same bits, from the one-row
// groups of 2 tokens to the tensor-core tile of 70, a down scale an expert; and against the CPU.
TEST_F(CudaMatmul, W8A8MoeInputsQuantisedOnceGiveTheSameBits) {
  const ResetKernelSwitches reset;
  const int64_t D = 512, F = 256, E = 6, K = 2;
  auto ex = experts(E + 1, D, F, DType::F8_E4M3);
  for (size_t e = 0; e < ex.ffn.size(); ++e) {
    ex.ffn[e].gate.activation_scale = ex.ffn[e].up.activation_scale = 3.0f / 448.0f;
    ex.ffn[e].down.activation_scale = (6.0f + static_cast<float>(e)) / 448.0f;
  }
  const RoutedAndShared both(ex, *gpu_);
  for (int64_t T : {2, 5, 24, 70}) {
    const Routed in = routed(T, D, E, K, static_cast<uint64_t>(270 + T), static_cast<uint64_t>(280 + T));
    const std::vector<float> want =
        vec(cpu_.moe({.x = in.xc, .routing = in.rc, .experts = both.cpu_routed, .shared = &ex.ffn[E]}, host_arena_));
    std::vector<float> got[2];
    for (int pre : {0, 1}) {
      set_prequantize_for_tests(pre);
      got[pre] =
          down(gpu_->moe({.x = in.xg, .routing = in.rg, .experts = both.gpu_routed, .shared = &both.dev[E]}, *dev_arena_));
    }
    EXPECT_EQ(got[1], got[0]) << "T=" << T;
    EXPECT_LE(rel_l2(got[1], want), T > 32 ? kFp8MmaRelL2 : kF32RelL2) << "T=" << T;
  }
}

// An FFN whose gate and up have different activation scales (the loader gives them one, max(a_gate, a_up); a
// backend given two must still quantise each input with its own): gate and up then run apart, and the FFN meets the
// CPU's, on 1, 5 and 70 rows.
TEST_F(CudaMatmul, W8A8FfnWithTwoScalesForGateAndUp) {
  const ResetKernelSwitches reset;
  const int64_t D = 512, F = 256;
  auto ex = experts(1, D, F, DType::F8_E4M3);
  ex.ffn[0].gate.activation_scale = 2.0f / 448.0f;
  ex.ffn[0].up.activation_scale = 5.0f / 448.0f;
  ex.ffn[0].down.activation_scale = 30.0f / 448.0f;
  const std::vector<FfnWeights> dev = ex.on(*gpu_);
  for (int64_t T : {1, 5, 70}) {
    std::vector<float> x = randn(static_cast<size_t>(T * D), static_cast<uint64_t>(300 + T));
    const std::vector<float> want = vec(cpu_.ffn(host(x, {T, D}), ex.ffn[0], host_arena_));
    const std::vector<float> got = down(gpu_->ffn(up(x, {T, D}), dev[0], *dev_arena_));
    EXPECT_LE(rel_l2(got, want), T > 32 ? kFp8MmaRelL2 : kF32RelL2) << "T=" << T;
  }
}

}  // namespace
}  // namespace quatre::cuda
