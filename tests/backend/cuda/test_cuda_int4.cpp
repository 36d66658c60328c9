// CudaBackend on 4-bit weights (core/int4.h) against CpuBackend on the same bytes (itself equal to the dequantised
// F32 weights bit for bit: test_cpu_int4): matmul on the small-M kernels (by default 1 row or unaligned activations
// on the FMA kernel, 2-64 rows on the small tensor-core kernel: 16-byte loads of 32 codes, one to eight warps a column, N not a multiple of a warp's or a block's columns, 16-byte and
// scalar activation loads) and on the tile (9 and 70 rows), symmetric and asymmetric, group sizes 32, 128 and 96
// (not a power of two), K not a multiple of 256; FFN and MoE with 4-bit experts and a shared expert on both
// row-group sizes; the row dequantisation (exact) and MLA with a 4-bit kv_b in both forms; random 4-bit weights;
// layouts the backend refuses; the small tensor-core kernel on 4-bit weights (1-64 rows) and the staged kernel (rows
// of 512-4096 bytes) against the CPU and the kernels that run with them off; the activations' three BF16 terms made
// once (the same bits); a prompt's experts through cuBLASLt's BF16 GEMMs (their dequantisation and roundings against
// the host's, the MoE against the CPU within BF16's rounding). Errors: ‖got − want‖ / ‖want‖ with the fp32 bound of
// test_cuda_ops. Skips without a GPU.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "cuda_test_fixture.h"
#include "backend/cuda/gemm_lt.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/op_args.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/int4.h"

namespace quatre::cuda {
namespace {

using backend_test::Int4Host;
using backend_test::randn;
using backend_test::rel_l2;


class CudaInt4 : public CudaVsCpu {
 protected:
  // CUDA matmul == CPU matmul for the weights of each case, symmetric and asymmetric, at each row count, with
  // 16-byte and scalar activation loads.
  void expect_matmuls_match(std::span<const MatmulCase> cases, std::initializer_list<int64_t> rows, uint64_t seed) {
    for (bool is_symmetric : {true, false}) {
      for (const MatmulCase& c : cases) {
        const Int4Host w(c.out, c.in, c.group_size, is_symmetric, ++seed);
        const Weight wd = gpu_->prepare_weight(w.weight);
        for (int64_t M : rows) {
          std::vector<float> x = randn(static_cast<size_t>(M * c.in), ++seed);
          const std::vector<float> want = vec(cpu_.matmul(host(x, {M, c.in}), w.weight, host_arena_));
          for (size_t offset : {0, 1}) {
            const std::vector<float> got = down(gpu_->matmul(up(x, {M, c.in}, offset), wd, *dev_arena_));
            EXPECT_LE(rel_l2(got, want), kF32RelL2) << (is_symmetric ? "symmetric" : "asymmetric") << " G=" << c.group_size
                                                    << " M=" << M << " in=" << c.in << " out=" << c.out << " x offset " << offset;
          }
        }
      }
    }
  }

};

TEST_F(CudaInt4, MatmulMatchesCpuOnEveryKernel) {
  // Few columns: 1 (K 160, 224), 2 (384, 288), 4 (640) and 8 (2144, 2176) warps a column; N 13, 21, 67, 70, 130:
  // not a multiple of a warp's 8 columns nor of a block's; K % 256 != 0 throughout. Up to 8 rows the small-M
  // kernel (1 row alone, 2-4 in one pass, 5 and 8 in two), then the tile.
  const MatmulCase cases[] = {{32, 160, 130}, {32, 2144, 21}, {128, 384, 130}, {128, 2176, 21}, {96, 288, 67},
                              {32, 224, 13},  {128, 640, 70}};
  expect_matmuls_match(cases, {1, 2, 3, 5, 8, 9, 70}, 1);
}

// Many columns over a long K, N even and odd. N >= 4224: K split over 8 warps a column (one would leave 66 blocks
// of 64 columns: too few for the GPU); N = 33797: K not split (529 blocks), the routed experts' case.
TEST_F(CudaInt4, MatmulMatchesCpuOnManyColumns) {
  const MatmulCase cases[] = {{32, 2144, 4224}, {128, 4096, 4224}, {128, 6272, 4224}, {96, 2112, 4226}, {128, 2176, 4225}};
  expect_matmuls_match(cases, {1, 3, 8}, 500);
  const MatmulCase k_not_split[] = {{128, 2176, 33797}};
  expect_matmuls_match(k_not_split, {1, 5}, 600);
}

// The small tensor-core kernel on 4-bit weights (matmul_small_tc.cu: codes into the mma, each 32-k block's sum
// folded with its group's scale, and offset times the block's Σx) against the CPU and against the kernels that run
// with it off (the FMA kernel up to 8 rows, the tile past): symmetric and asymmetric, G 32, 64, 128, 1-8 rows
// (plain, and as groups of a MoE problem through moe below) and 9-64 (2, 4, 8 row blocks), N not a multiple of a
// warp's 16 columns, K = G · odd (tails of a 128-k chunk), 1 to 8 k slices a column; the same call twice gives the
// same bits.
TEST_F(CudaInt4, SmallTensorCoreMatmulMatchesCpuAndTheOtherKernels) {
  const ResetKernelSwitches reset;
  const MatmulCase cases[] = {{32, 32 * 3, 13},   {32, 32 * 67, 21},  {64, 64 * 5, 130}, {64, 64 * 33, 300},
                              {128, 128 * 3, 70}, {128, 128 * 17, 33}, {128, 128 * 9, 520}};
  uint64_t seed = 700;
  for (bool is_symmetric : {true, false}) {
    for (const MatmulCase& c : cases) {
      const Int4Host w(c.out, c.in, c.group_size, is_symmetric, ++seed);
      const Weight wd = gpu_->prepare_weight(w.weight);
      for (int64_t M : {1, 2, 3, 5, 8, 9, 16, 33, 64}) {
        std::vector<float> x = randn(static_cast<size_t>(M * c.in), ++seed);
        const std::vector<float> want = vec(cpu_.matmul(host(x, {M, c.in}), w.weight, host_arena_));
        const Tensor xd = up(x, {M, c.in});
        set_small_tc_for_tests(0);
        const std::vector<float> off = down(gpu_->matmul(xd, wd, *dev_arena_));
        set_small_tc_for_tests(1);
        const std::vector<float> tc = down(gpu_->matmul(xd, wd, *dev_arena_));
        const std::string what = std::string(is_symmetric ? "symmetric" : "asymmetric") + " G=" +
                                 std::to_string(c.group_size) + " M=" + std::to_string(M) + " in=" +
                                 std::to_string(c.in) + " out=" + std::to_string(c.out);
        EXPECT_LE(rel_l2(off, want), kF32RelL2) << "small tensor cores off " << what;
        EXPECT_LE(rel_l2(tc, want), kF32RelL2) << "small tensor cores " << what;
        EXPECT_EQ(down(gpu_->matmul(xd, wd, *dev_arena_)), tc) << "deterministic " << what;
      }
    }
  }
}

// The staged kernel on 4-bit weights (matmul_staged.cu: the codes and each piece's scale, and offset, copied into
// shared memory) against the CPU and against the FMA kernel: rows of 512-4096 bytes (K = 1024-8192), G 32 and 128,
// symmetric and asymmetric, N not a multiple of a tile's rows; 1 row, and 3 and 8 with the small tensor cores off;
// 4-16 pieces a thread; the same call twice gives the same bits, and the streamed form (2 and 3 stages, its grid
// whole or on 1 and 7 blocks) the staged grid's.
TEST_F(CudaInt4, StagedMatmulMatchesCpuAndFmaKernel) {
  const ResetKernelSwitches reset;
  set_small_tc_for_tests(0);
  const MatmulCase cases[] = {{32, 1024, 130}, {128, 2048, 1000}, {128, 4096, 21}, {32, 8192, 300}};
  uint64_t seed = 800;
  for (bool is_symmetric : {true, false}) {
    for (const MatmulCase& c : cases) {
      const Int4Host w(c.out, c.in, c.group_size, is_symmetric, ++seed);
      const Weight wd = gpu_->prepare_weight(w.weight);
      for (int64_t M : {1, 3, 8}) {
        std::vector<float> x = randn(static_cast<size_t>(M * c.in), ++seed);
        const std::vector<float> want = vec(cpu_.matmul(host(x, {M, c.in}), w.weight, host_arena_));
        const Tensor xd = up(x, {M, c.in});
        const std::string what = std::string(is_symmetric ? "symmetric" : "asymmetric") + " G=" +
                                 std::to_string(c.group_size) + " M=" + std::to_string(M) + " in=" +
                                 std::to_string(c.in) + " out=" + std::to_string(c.out);
        set_staged_for_tests(0);
        EXPECT_LE(rel_l2(down(gpu_->matmul(xd, wd, *dev_arena_)), want), kF32RelL2) << "FMA kernel " << what;
        const MatmulProblem p{.x = xd.data_as<float>(), .ldx = c.in, .M = M, .N = c.out, .K = c.in,
                              .weight = dev(wd, "w")};
        std::vector<float> staged;
        for (int pieces : {0, 4, 8, 16}) {  // 0: as the launch chooses
          set_staged_for_tests(1, pieces, 0);
          ASSERT_TRUE(staged_applies(p)) << what;
          const std::string how = "staged (" + std::to_string(pieces) + " pieces) ";
          const std::vector<float> got = down(gpu_->matmul(xd, wd, *dev_arena_));
          EXPECT_LE(rel_l2(got, want), kF32RelL2) << how << what;
          EXPECT_EQ(down(gpu_->matmul(xd, wd, *dev_arena_)), got) << "deterministic " << how << what;
          if (pieces == 0) staged = got;
        }
        // The streamed form: each tile's arithmetic, so the staged grid's bits (its grid whole, and on 1 and 7 blocks).
        for (int stages : {2, 3}) {
          for (int cap : {0, 1, 7}) {
            set_staged_for_tests(1, 0, stages, cap);
            EXPECT_EQ(down(gpu_->matmul(xd, wd, *dev_arena_)), staged)
                << "streamed in " << stages << " stages on " << cap << " blocks " << what;
          }
        }
      }
    }
  }
}

// n BF16 values (or terms) from device memory.
std::vector<uint16_t> fetch(const uint16_t* d, size_t n) {
  std::vector<uint16_t> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), d, n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

TEST_F(CudaInt4, FfnAndMoeMatchCpuOnBothGroupSizes) {
  const int64_t E = 6, K = 2;
  struct Dims {
    int64_t D, F, G;
  };
  for (const Dims dims : {Dims{64, 96, 32}, Dims{256, 128, 128}, Dims{1024, 1024, 128}}) {
    for (bool is_symmetric : {true, false}) {
      const auto ex = int4_experts(E + 1, dims.D, dims.F, dims.G, is_symmetric);  // the last is the shared expert
      const RoutedAndShared both(ex, *gpu_);
      const int64_t D = dims.D;
      // T*K <= 16*E: groups of 8 rows (24: some full); 140 > 96: groups of 64 (tile). T = 7, 24: 2.3 and 8 rows a
      // group expected, the small tensor-core kernel (ffn: plain problems of 7 and 24 rows too); T = 1: the staged
      // kernel where rows are 512-4096 bytes (D = F = 1024), else the FMA kernel.
      for (int64_t T : {1, 7, 24, 70}) {
        const Routed in = routed(T, D, E, K, static_cast<uint64_t>(40 + T), static_cast<uint64_t>(50 + T));
        const Tensor &xc = in.xc, &xg = in.xg;
        const Routing &rc = in.rc, &rg = in.rg;
        const std::string what = std::string(is_symmetric ? "symmetric" : "asymmetric") + " G=" + std::to_string(dims.G) +
                                 " T=" + std::to_string(T);
        EXPECT_LE(rel_l2(down(gpu_->ffn(xg, both.dev[E], *dev_arena_)), vec(cpu_.ffn(xc, ex.ffn[E], host_arena_))), kF32RelL2)
            << "ffn " << what;
        for (bool shared : {false, true}) {
          const std::vector<float> want = vec(cpu_.moe({.x = xc, .routing = rc, .experts = both.cpu_routed,
                                                        .shared = shared ? &ex.ffn[E] : nullptr}, host_arena_));
          const std::vector<float> got = down(gpu_->moe({.x = xg, .routing = rg, .experts = both.gpu_routed,
                                                        .shared = shared ? &both.dev[E] : nullptr}, *dev_arena_));
          EXPECT_LE(rel_l2(got, want), kF32RelL2) << "moe " << what << " shared=" << shared;
        }
      }
    }
  }
}

// Where launch_split_terms puts k in a plane: each octet in the order {0, 4, 1, 5, 2, 6, 3, 7} (the 4-bit small
// tensor-core kernel's slots), so k % 8 = o < 4 goes to 2o and o >= 4 to 2(o - 4) + 1.
int64_t interleaved_k(int64_t k) {
  const int64_t o = k % 8;
  return k - o + (o < 4 ? 2 * o : 2 * (o - 4) + 1);
}

// A matmul's input as its three BF16 terms made once (launch_split_terms, launch_silu_mul_terms): the terms are x =
// hi + mid + lo rounded to nearest even one after the other, each octet of k interleaved (checked on the host); the
// 4-bit small tensor-core kernel given them (matmul_takes_terms must say so) gives the bits of splitting its own
// loads, on 2-8 plain rows, symmetric and asymmetric; the gating with terms gives launch_silu_mul's hidden.
TEST_F(CudaInt4, InputTermsMadeOnceGiveTheSameBits) {
  const ResetKernelSwitches reset;
  const auto terms_of = [](const std::vector<float>& x) {  // [M][K] -> [M][3][K] on the host, octets interleaved
    const int64_t K = 96, M = static_cast<int64_t>(x.size()) / K;
    std::vector<uint16_t> t(static_cast<size_t>(3 * M * K));
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t k = 0; k < K; ++k) {
        float r = x[static_cast<size_t>(m * K + k)];
        for (int64_t i = 0; i < 3; ++i) {
          const uint16_t b = f32_to_bf16(r);
          t[static_cast<size_t>((3 * m + i) * K + interleaved_k(k))] = b;
          r -= bf16_to_f32(b);
        }
      }
    }
    return t;
  };
  uint64_t seed = 7100;
  const int64_t K = 96;
  {  // the terms, and the gating with them
    const int64_t M = 5;
    const std::vector<float> x = randn(static_cast<size_t>(M * K), ++seed), u = randn(static_cast<size_t>(M * K), ++seed);
    const Tensor xd = up(x, {M, K}), g1 = up(x, {M, K}), g2 = up(x, {M, K}), ud = up(u, {M, K});
    auto* t = static_cast<uint16_t*>(dev_arena_->allocate(static_cast<size_t>(6 * M * K), 256));
    ASSERT_EQ(launch_split_terms(xd.data_as<float>(), K, M, K, t, 3, nullptr), cudaSuccess);
    EXPECT_EQ(fetch(t, static_cast<size_t>(3 * M * K)), terms_of(x)) << "split terms";
    ASSERT_EQ(launch_silu_mul(g1.data_as<float>(), ud.data_as<float>(), M * K, nullptr), cudaSuccess);
    ASSERT_EQ(launch_silu_mul_terms(g2.data_as<float>(), ud.data_as<float>(), M, K, t, 3, nullptr), cudaSuccess);
    const std::vector<float> gated = down(g1);
    EXPECT_EQ(down(g2), gated) << "gating";
    EXPECT_EQ(fetch(t, static_cast<size_t>(3 * M * K)), terms_of(gated)) << "gated terms";
    EXPECT_EQ(launch_split_terms(xd.data_as<float>(), K, M, K - 4, t, 3, nullptr), cudaErrorInvalidValue) << "K % 8";
    EXPECT_EQ(launch_silu_mul_terms(g2.data_as<float>(), ud.data_as<float>(), M, K - 4, t, 3, nullptr), cudaErrorInvalidValue)
        << "K % 8";
    EXPECT_EQ(launch_split_terms(xd.data_as<float>(), K, M, K, t, 2, nullptr), cudaErrorInvalidValue) << "planes";
  }
  for (bool is_symmetric : {true, false}) {
    const int64_t N = 80;
    const Int4Host w(N, K, 32, is_symmetric, ++seed);
    const Weight wd = gpu_->prepare_weight(w.weight);
    for (int64_t M : {2, 5, 8}) {
      std::vector<float> x = randn(static_cast<size_t>(M * K), ++seed);
      const std::vector<float> zeros(static_cast<size_t>(M * N), 0.0f);
      const Tensor xd = up(x, {M, K}), y1 = up(zeros, {M, N}), y2 = up(zeros, {M, N});
      auto* t = static_cast<uint16_t*>(dev_arena_->allocate(static_cast<size_t>(6 * M * K), 256));
      ASSERT_EQ(launch_split_terms(xd.data_as<float>(), K, M, K, t, 3, nullptr), cudaSuccess);
      MatmulProblem p{.x = xd.data_as<float>(), .ldx = K, .M = M, .N = N, .K = K, .weight = dev(wd, "w"),
                      .y = y1.data_as<float>(), .ldy = N};
      const std::string what = std::string(is_symmetric ? "symmetric" : "asymmetric") + " M=" + std::to_string(M);
      ASSERT_EQ(launch_matmul(p, nullptr), cudaSuccess);
      p.x_terms = t, p.y = y2.data_as<float>();
      EXPECT_TRUE(matmul_takes_terms(p)) << what;
      ASSERT_EQ(launch_matmul(p, nullptr), cudaSuccess);
      const std::vector<float> own = down(y1), made = down(y2);
      EXPECT_EQ(made, own) << what;
      EXPECT_LE(rel_l2(made, vec(cpu_.matmul(host(x, {M, K}), w.weight, host_arena_))), kF32RelL2) << what;
      set_terms_for_tests(0);
      EXPECT_FALSE(matmul_takes_terms(p)) << what;
      set_terms_for_tests(-1);
    }
  }
}

// The MoE with 4-bit experts on the small tensor-core kernel (T = 7, 24: 2.3 and 8 rows a group expected) takes its
// input and gated hidden as terms made once: the bits of the kernels splitting their loads, and the CPU's sums.
TEST_F(CudaInt4, MoeWithInputTermsMadeOnceGivesTheSameBits) {
  const ResetKernelSwitches reset;
  const int64_t E = 6, K = 2, D = 256, F = 128;
  for (bool is_symmetric : {true, false}) {
    const auto ex = int4_experts(E + 1, D, F, 128, is_symmetric);
    const RoutedAndShared both(ex, *gpu_);
    for (int64_t T : {7, 24}) {
      const Routed in = routed(T, D, E, K, static_cast<uint64_t>(60 + T), static_cast<uint64_t>(70 + T));
      const std::string what = std::string(is_symmetric ? "symmetric" : "asymmetric") + " T=" + std::to_string(T);
      std::vector<float> got[2];
      for (int terms : {0, 1}) {
        set_terms_for_tests(terms);
        got[terms] =
            down(gpu_->moe({.x = in.xg, .routing = in.rg, .experts = both.gpu_routed, .shared = &both.dev[E]}, *dev_arena_));
      }
      EXPECT_EQ(got[1], got[0]) << what;
      // The problems moe() builds for these experts (groups of 8, the pairs over the experts a group expected) are the
      // ones that read terms.
      const DevWeight gate0 = dev(both.gpu_routed[0].gate, "gate"), down0 = dev(both.gpu_routed[0].down, "down");
      const float hint = static_cast<float>(T * K) / static_cast<float>(E);
      const auto* table = static_cast<const DevWeight*>(dev_arena_->allocate(sizeof(DevWeight), 256));  // unread
      const auto* rows = static_cast<const int32_t*>(dev_arena_->allocate(64, 256));                    // unread
      const MatmulProblem p{.x = in.xg.data_as<float>(), .ldx = D, .x_rows = rows, .M = 8 * E, .N = F, .K = D,
                            .weight = gate0, .experts = table, .rows_per_group = 8, .rows_hint = hint};
      MatmulProblem q = p;
      q.x_rows = nullptr, q.N = D, q.K = F, q.weight = down0, q.ldx = F;
      EXPECT_TRUE(matmul_takes_terms(p) && matmul_takes_terms(q)) << what;
      const std::vector<float> want =
          vec(cpu_.moe({.x = in.xc, .routing = in.rc, .experts = both.cpu_routed, .shared = &ex.ffn[E]}, host_arena_));
      EXPECT_LE(rel_l2(got[1], want), kF32RelL2) << what;
    }
  }
}

// The 4-bit experts' activations as one BF16 plane (the default; QUATRE_CUDA_INT4_ACT=fp32 keeps three terms): the plane is x rounded to nearest
// even (the gating's too), checked on the host; the small tensor-core kernel given it computes the product of the
// codes with those BF16 values: the CPU's matmul of x rounded on the host, within fp32 sums; the MoE (T = 7, 24) against
// the CPU within BF16's rounding, and not the three terms' bits.
TEST_F(CudaInt4, Bf16ActivationsAreXRoundedToBf16) {
  const ResetKernelSwitches reset;
  constexpr double kBf16RelL2 = 1e-2;
  const auto round_bf16 = [](std::vector<float> v) {
    for (float& x : v) x = bf16_to_f32(f32_to_bf16(x));
    return v;
  };
  const auto bits = [](const std::vector<float>& v) {  // rounded, octets interleaved as the kernel's slots
    std::vector<uint16_t> b(v.size());
    for (size_t i = 0; i < v.size(); ++i) b[i - i % 8 + static_cast<size_t>(interleaved_k(static_cast<int64_t>(i % 8)))] = f32_to_bf16(v[i]);
    return b;
  };
  uint64_t seed = 7300;
  const int64_t K = 96;
  {  // the plane, and the gating's
    const int64_t M = 5;
    const std::vector<float> x = randn(static_cast<size_t>(M * K), ++seed), u = randn(static_cast<size_t>(M * K), ++seed);
    const Tensor xd = up(x, {M, K}), g1 = up(x, {M, K}), g2 = up(x, {M, K}), ud = up(u, {M, K});
    auto* t = static_cast<uint16_t*>(dev_arena_->allocate(static_cast<size_t>(2 * M * K), 256));
    ASSERT_EQ(launch_split_terms(xd.data_as<float>(), K, M, K, t, 1, nullptr), cudaSuccess);
    EXPECT_EQ(fetch(t, static_cast<size_t>(M * K)), bits(x)) << "x rounded";
    ASSERT_EQ(launch_silu_mul(g1.data_as<float>(), ud.data_as<float>(), M * K, nullptr), cudaSuccess);
    ASSERT_EQ(launch_silu_mul_terms(g2.data_as<float>(), ud.data_as<float>(), M, K, t, 1, nullptr), cudaSuccess);
    const std::vector<float> gated = down(g1);
    EXPECT_EQ(down(g2), gated) << "gating";
    EXPECT_EQ(fetch(t, static_cast<size_t>(M * K)), bits(gated)) << "gated, rounded";
  }
  for (bool is_symmetric : {true, false}) {
    const int64_t N = 80;
    const Int4Host w(N, K, 32, is_symmetric, ++seed);
    const Weight wd = gpu_->prepare_weight(w.weight);
    for (int64_t M : {2, 5, 8}) {
      const std::vector<float> x = randn(static_cast<size_t>(M * K), ++seed);
      std::vector<float> xr = round_bf16(x);
      const std::vector<float> zeros(static_cast<size_t>(M * N), 0.0f);
      const Tensor xd = up(x, {M, K}), y = up(zeros, {M, N});
      auto* t = static_cast<uint16_t*>(dev_arena_->allocate(static_cast<size_t>(2 * M * K), 256));
      ASSERT_EQ(launch_split_terms(xd.data_as<float>(), K, M, K, t, 1, nullptr), cudaSuccess);
      MatmulProblem p{.x = xd.data_as<float>(), .ldx = K, .M = M, .N = N, .K = K, .weight = dev(wd, "w"),
                      .y = y.data_as<float>(), .ldy = N};
      p.x_terms = t, p.x_term_planes = 1;
      const std::string what = std::string(is_symmetric ? "symmetric" : "asymmetric") + " M=" + std::to_string(M);
      EXPECT_TRUE(matmul_takes_terms(p)) << what;
      ASSERT_EQ(launch_matmul(p, nullptr), cudaSuccess);
      EXPECT_LE(rel_l2(down(y), vec(cpu_.matmul(host(xr, {M, K}), w.weight, host_arena_))), kF32RelL2) << what;
      p.x_term_planes = 2;
      EXPECT_EQ(launch_matmul(p, nullptr), cudaErrorInvalidValue) << what;
    }
  }
  const int64_t E = 6, Kr = 2, D = 256, F = 128;
  for (bool is_symmetric : {true, false}) {
    const auto ex = int4_experts(E + 1, D, F, 128, is_symmetric);
    const RoutedAndShared both(ex, *gpu_);
    for (int64_t T : {7, 24}) {
      const Routed in = routed(T, D, E, Kr, static_cast<uint64_t>(80 + T), static_cast<uint64_t>(90 + T));
      const std::string what = std::string(is_symmetric ? "symmetric" : "asymmetric") + " T=" + std::to_string(T);
      set_terms_for_tests(1);
      std::vector<float> got[2];
      for (int mode : {0, 1}) {
        set_int4_act_for_tests(mode);
        EXPECT_EQ(int4_bf16_activations(), mode == 1);
        got[mode] =
            down(gpu_->moe({.x = in.xg, .routing = in.rg, .experts = both.gpu_routed, .shared = &both.dev[E]}, *dev_arena_));
      }
      const std::vector<float> want =
          vec(cpu_.moe({.x = in.xc, .routing = in.rc, .experts = both.cpu_routed, .shared = &ex.ffn[E]}, host_arena_));
      EXPECT_LE(rel_l2(got[0], want), kF32RelL2) << "three terms " << what;
      EXPECT_LE(rel_l2(got[1], want), kBf16RelL2) << "bf16 " << what;
      EXPECT_NE(got[1], got[0]) << "the BF16 plane was not used: " << what;
    }
  }
  set_int4_act_for_tests(-1);
  if (std::getenv("QUATRE_CUDA_INT4_ACT") == nullptr) {
    EXPECT_TRUE(int4_bf16_activations()) << "the default";
  }
}

// A prompt's 4-bit routed experts through cuBLASLt's BF16 GEMMs (cuda_backend_moe.cpp routed_int4_experts_lt): the
// experts' weights dequantised to BF16 are core/int4.h's values rounded to nearest even (checked on the host, every
// matrix of a chunk); the MoE against the CPU within BF16's rounding, and against the grouped kernels (other bits);
// 600 pairs (fewer than the path's 4096) or the path switched off give the grouped kernels' bits; chunks of 4 and of
// 1 expert and 3 lanes give the same bits as one chunk; symmetric and asymmetric, with a shared expert.
TEST_F(CudaInt4, PromptExpertsThroughBf16GemmsMatchCpu) {
  const ResetKernelSwitches reset;
  const int64_t D = 512, F = 256, E = 6, K = 2;
  constexpr double kBf16RelL2 = 1e-2;  // weights and inputs rounded to BF16 (2^-9 each), fp32 sums
  {  // the rows and the gated hidden rounded to BF16 (a row map with a padding row)
    const int64_t M = 3, Kx = 64;
    const std::vector<float> x = randn(static_cast<size_t>(M * Kx), 2001), u = randn(static_cast<size_t>(M * Kx), 2002);
    const Tensor xd = up(x, {M, Kx}), gd = up(x, {M, Kx}), ud = up(u, {M, Kx});
    const int32_t rows[3] = {2, -1, 0};
    auto* rows_d = static_cast<int32_t*>(dev_arena_->allocate(sizeof(rows), 256));
    auto* out = static_cast<uint16_t*>(dev_arena_->allocate(static_cast<size_t>(2 * M * Kx), 256));
    ASSERT_EQ(cudaMemcpy(rows_d, rows, sizeof(rows), cudaMemcpyHostToDevice), cudaSuccess);
    std::vector<uint16_t> got(static_cast<size_t>(M * Kx)), want(got.size());
    ASSERT_EQ(launch_bf16_rows(xd.data_as<float>(), Kx, rows_d, M, Kx, out, nullptr), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(got.data(), out, got.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t k = 0; k < Kx; ++k) {
        want[static_cast<size_t>(m * Kx + k)] = rows[m] < 0 ? 0 : f32_to_bf16(x[static_cast<size_t>(rows[m] * Kx + k)]);
      }
    }
    EXPECT_EQ(got, want) << "rows to bf16";
    ASSERT_EQ(launch_silu_mul_bf16(gd.data_as<float>(), ud.data_as<float>(), M, Kx, out, nullptr), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(got.data(), out, got.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    ASSERT_EQ(launch_silu_mul(gd.data_as<float>(), ud.data_as<float>(), M * Kx, nullptr), cudaSuccess);
    const std::vector<float> gated = down(gd);
    for (size_t i = 0; i < want.size(); ++i) want[i] = f32_to_bf16(gated[i]);
    EXPECT_EQ(got, want) << "gating to bf16";
  }
  for (bool is_symmetric : {true, false}) {
    const auto ex = int4_experts(E + 1, D, F, 128, is_symmetric);  // the last is the shared expert
    const RoutedAndShared both(ex, *gpu_);
    {  // the dequantisation of experts 4 and 1 (a table [3][E] of the device weights)
      std::vector<DevWeight> table;
      for (int j = 0; j < 3; ++j) {
        for (int64_t e = 0; e < E; ++e) {
          const FfnWeights& f = both.gpu_routed[static_cast<size_t>(e)];
          table.push_back(dev(j == 0 ? f.gate : j == 1 ? f.up : f.down, "expert"));
        }
      }
      auto* table_d = static_cast<DevWeight*>(dev_arena_->allocate(table.size() * sizeof(DevWeight), 256));
      auto* ids_d = static_cast<int32_t*>(dev_arena_->allocate(2 * sizeof(int32_t), 256));
      auto* out = static_cast<uint16_t*>(dev_arena_->allocate(static_cast<size_t>(2 * 3 * F * D * 2), 256));
      const int32_t ids[2] = {4, 1};
      ASSERT_EQ(cudaMemcpy(table_d, table.data(), table.size() * sizeof(DevWeight), cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(ids_d, ids, sizeof(ids), cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_EQ(launch_dequant_int4_bf16(table_d, E, ids_d, 2, is_symmetric, F, D, out, nullptr), cudaSuccess);
      std::vector<uint16_t> got(static_cast<size_t>(2 * 3 * F * D));
      ASSERT_EQ(cudaMemcpy(got.data(), out, got.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
      for (int i = 0; i < 2; ++i) {
        for (int j = 0; j < 3; ++j) {
          const Int4Host& h = ex.stored[static_cast<size_t>(3 * ids[i] + j)];
          const int64_t rows = j < 2 ? F : D, cols = j < 2 ? D : F;
          std::vector<float> row(static_cast<size_t>(cols));
          int64_t wrong = 0;
          for (int64_t r = 0; r < rows; ++r) {
            dequantize_int4_row(h.codes.data() + r * cols / 2, h.scales.data() + r * cols / 128,
                                is_symmetric ? nullptr : h.offsets.data() + r * cols / 128, cols, 128, row.data());
            for (int64_t c = 0; c < cols; ++c) {
              wrong += got[static_cast<size_t>((3 * i + j) * F * D + r * cols + c)] != f32_to_bf16(row[static_cast<size_t>(c)]);
            }
          }
          EXPECT_EQ(wrong, 0) << "expert " << ids[i] << " matrix " << j << (is_symmetric ? " symmetric" : " asymmetric");
        }
      }
    }
    for (int64_t T : {2100, 300}) {  // 4200 pairs take the path; 600 do not
      const Routed in = routed(T, D, E, K, static_cast<uint64_t>(1900 + T), static_cast<uint64_t>(1901 + T));
      const std::string what = std::string(is_symmetric ? "symmetric" : "asymmetric") + " T=" + std::to_string(T);
      const std::vector<float> want =
          vec(cpu_.moe({.x = in.xc, .routing = in.rc, .experts = both.cpu_routed, .shared = &ex.ffn[E]}, host_arena_));
      const auto run = [&] {
        return down(gpu_->moe({.x = in.xg, .routing = in.rg, .experts = both.gpu_routed, .shared = &both.dev[E]}, *dev_arena_));
      };
      set_cublaslt_for_tests(0);
      const std::vector<float> kernels = run();
      EXPECT_LE(rel_l2(kernels, want), kF32RelL2) << what << " grouped kernels";
      set_cublaslt_for_tests(1, 1, 0);
      const std::vector<float> lt = run();
      if (T * K < 4096) {
        EXPECT_EQ(lt, kernels) << what << ": too few pairs for cuBLASLt";
        continue;
      }
      EXPECT_LE(rel_l2(lt, want), kBf16RelL2) << what << " BF16 GEMMs";
      EXPECT_NE(lt, kernels) << what << ": the switch must move the experts to cuBLASLt";
      for (int lanes : {1, 3}) {  // the scratch of a chunk reused while the lanes' GEMMs of the one before ran
        set_cublaslt_for_tests(1, lanes, 0);
        for (int chunk : {4, 1}) {
          set_int4_lt_for_tests(1, chunk);
          EXPECT_EQ(run(), lt) << what << " in chunks of " << chunk << " over " << lanes << " lanes";
        }
      }
      set_int4_lt_for_tests(-1);
      set_cublaslt_for_tests(1, 3, 0);
      EXPECT_EQ(run(), lt) << what << " over 3 lanes";
      set_int4_lt_for_tests(0);
      EXPECT_EQ(run(), kernels) << what << ": QUATRE_CUDA_LT_INT4 off";
      set_int4_lt_for_tests(-1);
    }
  }
}

// Row dequantisation (launch_dequant_rows, what MLA's kv_b goes through): exactly core/int4.h's rule. (A 4-bit
// embedding table is not a format quatre writes; embed is only the op that reaches the kernel here.)
TEST_F(CudaInt4, RowDequantisationIsTheCoreRuleExactly) {
  const int64_t V = 37, D = 96, G = 32;
  for (bool is_symmetric : {true, false}) {
    const Int4Host table(V, D, G, is_symmetric, 3);
    const std::vector<int32_t> ids = {36, 0, 5, 5, 17};
    std::vector<float> want(ids.size() * D);
    for (size_t t = 0; t < ids.size(); ++t) {
      const size_t row = static_cast<size_t>(ids[t]);
      dequantize_int4_row(table.codes.data() + row * D / 2, table.scales.data() + row * D / G,
                          is_symmetric ? nullptr : table.offsets.data() + row * D / G, D, G, want.data() + t * D);
    }
    EXPECT_EQ(down(gpu_->embed(ids, gpu_->prepare_weight(table.weight), *dev_arena_)), want)
        << (is_symmetric ? "symmetric" : "asymmetric");
  }
}

// `quatre quantize --what all` stores kv_b in 4 bits: MLA reads it through the row dequantisation (an fp32 copy: at
// one token the small q_abs kernel's F32 body, at three the 32-token kernel).
TEST_F(CudaInt4, MlaWith4BitKvBMatchesCpuInBothForms) {
  const MlaDims d{.n_heads = 10, .kv_lora_rank = 64, .qk_nope_head_dim = 16, .qk_rope_head_dim = 8, .v_head_dim = 24};
  const int64_t block_size = 4, n_blocks = 6, W = d.cache_width();
  std::vector<float> cache = randn(static_cast<size_t>(n_blocks * block_size * W), 20);
  const std::vector<int32_t> tables = {4, 1, 0, 5, 2, 3};
  const std::vector<int32_t> seq = {0, 1, 0}, ctx = {7, 4, 9};
  const std::vector<int64_t> own;
  for (int64_t T : {3, 1}) {
    const auto first = [&](const std::vector<int32_t>& v) { return std::span(v).first(static_cast<size_t>(T)); };
    const AttnMeta meta{.seq_index = first(seq), .context_lens = first(ctx), .slots = own, .block_tables = tables,
                        .max_blocks_per_seq = 3};
    std::vector<float> q = randn(static_cast<size_t>(T * d.q_width()), 22);
    for (bool is_symmetric : {true, false}) {
      const Int4Host kv_b(d.n_heads * (d.qk_nope_head_dim + d.v_head_dim), d.kv_lora_rank, 32, is_symmetric, 23, 0.2f);
      const Weight kv_b_d = gpu_->prepare_weight(kv_b.weight);
      for (MlaForm form : {MlaForm::kNaive, MlaForm::kAbsorbed}) {
        MlaArgs a{.q = host(q, {T, d.q_width()}), .kv_cache = host(cache, {n_blocks, block_size, W}), .kv_b = kv_b.weight,
                  .meta = &meta, .dims = d, .softmax_scale = 0.17f, .form = form};
        const std::vector<float> want = vec(cpu_.mla_attention(a, host_arena_));
        a.q = up(q, {T, d.q_width()});
        a.kv_cache = up(cache, {n_blocks, block_size, W});
        a.kv_b = kv_b_d;
        EXPECT_LE(rel_l2(down(gpu_->mla_attention(a, *dev_arena_)), want), kF32RelL2)
            << "T=" << T << (is_symmetric ? " symmetric" : " asymmetric") << (form == MlaForm::kNaive ? " naive" : " absorbed");
      }
    }
  }
}

TEST_F(CudaInt4, RandomWeightsHaveTheRequestedSpread) {
  const std::vector<int64_t> shape = {256, 512};
  const Weight w = gpu_->random_int4_weight(shape, 128, 0.02f, 7);
  ASSERT_TRUE(w.int4.has_value());
  EXPECT_TRUE(w.int4->is_symmetric());
  EXPECT_EQ(w.w.dtype(), DType::U8);
  std::vector<int32_t> rows(256);
  for (int32_t i = 0; i < 256; ++i) rows[static_cast<size_t>(i)] = i;
  const std::vector<float> v = down(gpu_->embed(rows, w, *dev_arena_));  // every row, dequantised
  ASSERT_EQ(v.size(), 256u * 512u);
  double s = 0, s2 = 0;
  for (float f : v) s += f, s2 += static_cast<double>(f) * f;
  const double mean = s / static_cast<double>(v.size()), sd = std::sqrt(s2 / static_cast<double>(v.size()) - mean * mean);
  EXPECT_NEAR(mean, 0.0, 1e-3);
  EXPECT_NEAR(sd, 0.02, 0.002);
  // And it multiplies like the CPU backend on a host copy of its bytes.
  std::vector<uint8_t> codes(256 * 256);
  std::vector<uint16_t> scales(256 * 4);
  gpu_->copy_to_host(w.w, codes.data());
  gpu_->copy_to_host(w.int4->scales, scales.data());
  Weight h;
  h.w = Tensor(codes.data(), DType::U8, {256, 256});
  h.int4 = Int4Weight{.scales = Tensor(scales.data(), DType::BF16, {256, 4}), .offsets = Tensor(), .group_size = 128};
  std::vector<float> x = randn(512, 9);
  EXPECT_LE(rel_l2(down(gpu_->matmul(up(x, {1, 512}), w, *dev_arena_)), vec(cpu_.matmul(host(x, {1, 512}), h, host_arena_))),
            kF32RelL2);
  EXPECT_THROW(gpu_->random_int4_weight(std::vector<int64_t>{4, 96}, 64, 0.02f, 1), InvalidRequest) << "96 % 64";
}

TEST_F(CudaInt4, LayoutsTheBackendRefusesAreErrors) {
  const Int4Host g16(8, 64, 16, true, 5);  // valid for core/int4.h and the CPU, not for the CUDA kernels
  EXPECT_THROW(gpu_->prepare_weight(g16.weight), LoadError) << "group size 16";
  const Int4Host gate(32, 64, 32, true, 6), up_w(32, 64, 32, false, 7), down_w(64, 32, 32, true, 8);
  Weight bad = gate.weight;
  bad.int4->scales = Tensor(const_cast<uint16_t*>(gate.scales.data()), DType::BF16, {32, 1});
  EXPECT_THROW(gpu_->prepare_weight(bad), LoadError) << "scales of the wrong shape";
  std::vector<float> x = randn(2 * 64, 1);
  // Unprepared 4-bit weights are refused like float ones.
  EXPECT_THROW(gpu_->matmul(up(x, {2, 64}), gate.weight, *dev_arena_), InvalidRequest);
  // gate and up of one FFN in different layouts (symmetric, asymmetric) run as two launches, not one.
  const FfnWeights mixed{gpu_->prepare_weight(gate.weight), gpu_->prepare_weight(up_w.weight),
                         gpu_->prepare_weight(down_w.weight)};
  const std::vector<float> want = vec(cpu_.ffn(host(x, {2, 64}), {gate.weight, up_w.weight, down_w.weight}, host_arena_));
  EXPECT_LE(rel_l2(down(gpu_->ffn(up(x, {2, 64}), mixed, *dev_arena_)), want), kF32RelL2);
}

}  // namespace
}  // namespace quatre::cuda
