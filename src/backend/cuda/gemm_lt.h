// Large W8A8 matmuls (prefill) on Hopper's wgmma through cuBLASLt (and a prompt's 4-bit experts, dequantised to
// BF16): y = (fp8(x / a) · w_fp8ᵀ) · (a · weight_scale),
// the W8A8 rule every quatre kernel computes (kernels.h DevWeight), with the activations quantised by our own kernel
// (the same bytes as the mma.sync kernels' act_q) and cuBLASLt's FP8 GEMM (fp32 accumulation, not its fast mode)
// writing fp32. For plain problems of many rows only; the mma.sync kernels keep decode. Independent GEMMs (a prompt's
// routed experts) may spread over side streams, "lanes", so that small ones fill the card together. Depends on CUDA
// and cuBLASLt.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include <cuda_runtime_api.h>

#include "backend/cuda/kernels.h"

struct cublasLtContext;

namespace quatre::cuda {

class LtGemm {
 public:
  LtGemm();  // defined where Plan is complete
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;
  ~LtGemm();

  // Whether p goes through cuBLASLt: on unless QUATRE_CUDA_CUBLASLT=0 (tests force either), a plain W8A8
  // problem (FP8 weights with an activation scale; no row maps, scales or SiLU gating) of at least kMinRows rows,
  // K and N multiples of 16, 16-byte aligned x rows and weights, not inside a stream capture.
  static bool applies(const MatmulProblem& p, cudaStream_t stream);
  static constexpr int64_t kMinRows = 256;
  // Bytes of scratch run() needs for p's quantised activations (both problems share them).
  static size_t scratch_bytes(const MatmulProblem& p);
  // p (and its second problem, when y2 is given) on `stream`; xq: scratch_bytes(p) of device memory. Returns
  // cudaErrorNotSupported, having launched nothing, when cuBLASLt has no handle or no algorithm for the shape (the
  // caller then runs its own kernels); cudaErrorInvalidValue for a problem applies() refuses; cudaErrorUnknown when
  // a cuBLASLt call fails.
  cudaError_t run(const MatmulProblem& p, void* xq, cudaStream_t stream);

  // The pieces, for callers that quantise their own rows (the routed experts): whether cuBLASLt is switched on
  // (QUATRE_CUDA_CUBLASLT, tests) and `stream` is not capturing a graph, whether it has a handle and an algorithm
  // for y [M, N] (ldy) = xq [M, K] · wᵀ, and that product times w.scale (y += with accumulate) on `stream`.
  static bool usable_on(cudaStream_t stream);
  bool supports(int64_t M, int64_t N, int64_t K, int64_t ldy);
  cudaError_t fp8_gemm(const uint8_t* xq, int64_t M, int64_t N, int64_t K, const DevWeight& w, float* y, int64_t ldy,
                       bool accumulate, cudaStream_t stream);
  // The same with BF16 operands (a prompt's 4-bit experts, dequantised): y [M, N] (ldy) = x [M, K] · wᵀ, w [N, K],
  // fp32 sums and output, alpha 1.
  bool supports_bf16(int64_t M, int64_t N, int64_t K, int64_t ldy);
  cudaError_t bf16_gemm(const uint16_t* x, int64_t M, int64_t N, int64_t K, const uint16_t* w, float* y, int64_t ldy,
                        cudaStream_t stream);

  // Batches of one shape through cuBLASLt's pointer-array mode: y_i [M, N] (ldy) = xq_i [M, K] · w_iᵀ for i < batch,
  // the three arrays of pointers in device memory; alpha 1, so the caller scales the sums (its weights' scales
  // differ). Whether this cuBLASLt and card have an algorithm for the shape in that mode; the launch.
  bool supports_batched(int64_t M, int64_t N, int64_t K, int64_t ldy, int batch);
  cudaError_t fp8_gemm_batched(const void* const* w, const void* const* xq, const void* const* y, int batch,
                               int64_t M, int64_t N, int64_t K, int64_t ldy, cudaStream_t stream);

  // Lanes for independent GEMMs: fork(stream) makes the lanes wait for what `stream` has queued and returns how many
  // there are (QUATRE_CUDA_LT_LANES, default 4; 0 when they could not be made: launch on `stream` itself); lane(i)
  // is the i-th; join(stream) makes `stream` wait for what the lanes have queued since.
  int fork(cudaStream_t stream);
  cudaStream_t lane(int i) const { return lanes_[static_cast<size_t>(i)]; }
  void join(cudaStream_t stream);
  // each(i, lane) for i in [begin, end), round the lanes (on `stream` itself when there are none), between a fork and
  // a join of `stream`.
  template <class Each>
  void over_lanes(cudaStream_t stream, size_t begin, size_t end, const Each& each) {
    const int n = fork(stream);
    for (size_t i = begin; i < end; ++i) each(i, n > 0 ? lane(static_cast<int>(i - begin) % n) : stream);
    join(stream);
  }

 private:
  struct Plan;
  // batch 0: one plain GEMM; bf16: BF16 operands instead of FP8 E4M3.
  Plan& plan(int64_t M, int64_t N, int64_t K, int64_t ldy, int batch = 0, bool bf16 = false);
  bool ready();  // a handle (made on first use)

  void* workspace(cudaStream_t stream);  // cuBLASLt's scratch for launches on `stream` (null: none could be made)

  cublasLtContext* handle_ = nullptr;
  bool broken_ = false;                  // cublasLtCreate failed
  std::map<cudaStream_t, void*> workspaces_;
  // plan()'s arguments -> its plan.
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int, bool>, std::unique_ptr<Plan>> plans_;
  std::vector<cudaStream_t> lanes_;
  std::vector<cudaEvent_t> lane_events_;  // [0]: the fork; [1 + i]: lane i's end
  bool lanes_broken_ = false;             // making them failed: not tried again
  int joining_ = 0;                       // lanes forked and not yet joined
};

// A prompt's 4-bit routed experts through BF16 GEMMs (cuda_backend_moe.cpp): on with cuBLASLt unless
// QUATRE_CUDA_LT_INT4=0; the experts dequantised at once: those whose BF16 weights (expert_bytes each) fit 512 MiB of
// scratch (at least one), or QUATRE_CUDA_LT_INT4_CHUNK experts.
bool int4_lt_enabled();
int64_t int4_lt_chunk_experts(int64_t expert_bytes);
// Tests: the 4-bit path as the environment says (-1), off (0) or on (1); chunk: experts a chunk (0: as above).
void set_int4_lt_for_tests(int mode, int chunk = 0);

// Whether a prompt's experts of one shape go through one pointer-array GEMM (on unless QUATRE_CUDA_LT_BATCHED=0).
bool lt_batched_enabled();

// Tests: cuBLASLt as QUATRE_CUDA_CUBLASLT says (-1), never (0) or wherever it applies (1); lanes: as
// QUATRE_CUDA_LT_LANES says (0) or n; batched: as QUATRE_CUDA_LT_BATCHED says (-1), off (0) or on (1).
void set_cublaslt_for_tests(int mode, int lanes = 0, int batched = -1);

}  // namespace quatre::cuda
