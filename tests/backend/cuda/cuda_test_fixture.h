// The fixture of the CUDA op tests: a CudaBackend and a CpuBackend side by side, device copies of host inputs and
// host copies of device results and weights, the fp32 error bound of a CUDA op against the CPU one, and random
// experts. Skips without a GPU.
// Depends on backend/cpu, backend/cuda and GoogleTest.
#pragma once

#include <initializer_list>
#include <memory>
#include <vector>

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "../backend_test_util.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/gemm_lt.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/device_info.h"

namespace quatre::cuda {

inline constexpr double kF32RelL2 = 1e-5;  // fp32 on both sides, different summation orders

class CudaVsCpu : public testing::Test {
 protected:
  void SetUp() override {
    if (device_count() == 0) GTEST_SKIP() << "no CUDA device present";
    // The 4-bit experts' exact fp32 activations (three BF16 terms), which the fp32 tolerances below hold for; the
    // default, BF16 activations, is tested on its own (test_cuda_int4 Bf16ActivationsAreXRoundedToBf16).
    set_int4_act_for_tests(0);
    set_segment_attention_tc_for_tests(-1);
    gpu_ = std::make_unique<CudaBackend>();
    dev_arena_ = std::make_unique<Arena>(gpu_->memory());
  }
  // A device copy of host values at `offset_floats` past a fresh allocation (1: activations not 16-byte aligned).
  Tensor up(const std::vector<float>& v, std::initializer_list<int64_t> shape, size_t offset_floats = 0) {
    auto* p = static_cast<float*>(dev_arena_->allocate((v.size() + offset_floats) * 4, 256)) + offset_floats;
    Tensor t(p, DType::F32, shape, Device::kCuda);
    EXPECT_EQ(static_cast<size_t>(t.numel()), v.size());
    EXPECT_EQ(cudaMemcpy(t.data(), v.data(), v.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
    // A copy from pageable memory may return before its DMA lands, and the backend's stream does not wait for
    // the legacy default stream: without this, a kernel could read a large input half-copied.
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    return t;
  }
  Tensor host(std::vector<float>& v, std::initializer_list<int64_t> shape) { return backend_test::host_tensor(v, shape); }
  std::vector<float> down(const Tensor& t) {
    // Kernels a test launched itself (launch_matmul(p, nullptr): the legacy default stream) are not ordered before
    // the backend's non-blocking stream, which copies: wait for them.
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<float> v(static_cast<size_t>(t.numel()));
    gpu_->copy_to_host(t, v.data());
    return v;
  }
  static std::vector<float> vec(const Tensor& t) { return backend_test::to_vector(t); }
  Weight prep(const backend_test::StoredWeight& s) { return gpu_->prepare_weight(s.weight); }
  // T tokens of width D routed to k of E experts (activations and logits of std 1 from the seeds) on both backends.
  struct Routed {
    std::vector<float> x;  // [T, D]: xc's values (a move keeps the buffer)
    Tensor xc, xg;
    Routing rc, rg;
  };
  Routed routed(int64_t T, int64_t D, int64_t E, int64_t k, uint64_t x_seed, uint64_t logits_seed) {
    Routed r;
    r.x = backend_test::randn(static_cast<size_t>(T * D), x_seed);
    std::vector<float> logits = backend_test::randn(static_cast<size_t>(T * E), logits_seed);
    const RouteArgs args{.n_experts_per_tok = k, .routed_scaling_factor = 2.0f};
    r.rc = cpu_.route(host(logits, {T, E}), args, host_arena_);
    r.rg = gpu_->route(up(logits, {T, E}), args, *dev_arena_);
    r.xc = host(r.x, {T, D});
    r.xg = up(r.x, {T, D});
    return r;
  }

  cpu::CpuBackend cpu_{2};
  Arena host_arena_{host_memory(), {.poison = true}};
  std::unique_ptr<CudaBackend> gpu_;
  std::unique_ptr<Arena> dev_arena_;
};

// Puts the kernels' test switches back to the environment's on scope exit (the 4-bit activations back to the
// fixture's exact ones).
struct ResetKernelSwitches {
  ~ResetKernelSwitches() {
    set_small_tc_for_tests(-1);
    set_staged_for_tests(-1);
    set_staged_long_rows_for_tests(-1);
    set_mla_tc_keys_for_tests(0);
    set_tc_fp8_for_tests(-1);
    set_pdl_for_tests(-1);
    set_mla_split_scores_for_tests(-1);
    set_mla_prefill_for_tests(-1);
    set_cublaslt_for_tests(-1);
    set_prequantize_for_tests(-1);
    set_mla_combine_tokens_for_tests(-1);
    set_terms_for_tests(-1);
    set_int4_lt_for_tests(-1);
    set_wide_q8_for_tests(-1);
    set_int4_act_for_tests(0);
    set_segment_attention_tc_for_tests(-1);
  }
};

// Experts on both backends for a MoE with a shared expert: the last of `ex` is the shared one, the others routed.
template <typename Stored>
struct RoutedAndShared {
  RoutedAndShared(const backend_test::ExpertWeights<Stored>& ex, Backend& gpu)
      : dev(ex.on(gpu)), cpu_routed(ex.ffn.begin(), ex.ffn.end() - 1), gpu_routed(dev.begin(), dev.end() - 1) {}
  std::vector<FfnWeights> dev;                     // all of them, on the device (dev.back(): the shared one)
  std::vector<FfnWeights> cpu_routed, gpu_routed;  // the routed ones
};

// n experts of `dtype` weights (values of std 0.2; FP8 at scale 0.01).
inline backend_test::ExpertWeights<backend_test::StoredWeight> experts(int n, int64_t D, int64_t F, DType dtype) {
  return backend_test::ExpertWeights<backend_test::StoredWeight>(n, D, F, [&](int64_t out, int64_t in, uint64_t seed) {
    return backend_test::StoredWeight(backend_test::randn(static_cast<size_t>(out * in), seed, 0.2f), {out, in}, dtype,
                                      0.01f);
  });
}

// n experts, all 4-bit (values of std 0.2 quantised in groups of G).
inline backend_test::ExpertWeights<backend_test::Int4Host> int4_experts(int n, int64_t D, int64_t F, int64_t G,
                                                                        bool is_symmetric) {
  return backend_test::ExpertWeights<backend_test::Int4Host>(n, D, F, [&](int64_t out, int64_t in, uint64_t seed) {
    return backend_test::Int4Host(out, in, G, is_symmetric, seed, 0.2f);
  });
}

// A 4-bit matmul's shape: group size, input and output widths.
struct MatmulCase {
  int64_t group_size, in, out;
};

}  // namespace quatre::cuda
