#include "backend/cuda/gemm_lt.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include <cublasLt.h>

#include "backend/cuda/env_switch.h"

namespace quatre::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;  // cuBLASLt's split-K and stream-K scratch

constexpr int kMaxLanes = 16;

std::atomic<int> g_test_mode{-1};
std::atomic<int> g_test_lanes{0};
std::atomic<int> g_test_batched{-1};

bool env_enabled() {
  static const bool env_on = env_switch_on("QUATRE_CUDA_CUBLASLT");  // on: 8K prefill 456 -> 188 ms on an H100 (16 layers)
  return switch_on(g_test_mode.load(), env_on);
}

int lanes_wanted() {
  static const int env_lanes = static_cast<int>(std::clamp<int64_t>(env_int("QUATRE_CUDA_LT_LANES", 4), 1, kMaxLanes));
  const int n = g_test_lanes.load();
  return n > 0 ? std::min(n, kMaxLanes) : env_lanes;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void set_cublaslt_for_tests(int mode, int lanes, int batched) {
  g_test_mode.store(mode);
  g_test_lanes.store(lanes);
  g_test_batched.store(batched);
}

bool lt_batched_enabled() {
  static const bool env_on = env_switch_on("QUATRE_CUDA_LT_BATCHED");
  return switch_on(g_test_batched.load(), env_on);
}

namespace {
std::atomic<int> g_int4_mode{-1};
std::atomic<int> g_int4_chunk{0};
constexpr int64_t kInt4ScratchBytes = int64_t{512} << 20;
}  // namespace

bool int4_lt_enabled() {
  static const bool env_on = env_switch_on("QUATRE_CUDA_LT_INT4");
  return switch_on(g_int4_mode.load(), env_on);
}

int64_t int4_lt_chunk_experts(int64_t expert_bytes) {
  static const int64_t env_chunk = env_int("QUATRE_CUDA_LT_INT4_CHUNK", 0);
  const int64_t forced = g_int4_chunk.load() > 0 ? g_int4_chunk.load() : env_chunk;
  if (forced > 0) return forced;
  return std::max<int64_t>(1, kInt4ScratchBytes / std::max<int64_t>(1, expert_bytes));
}

void set_int4_lt_for_tests(int mode, int chunk) {
  g_int4_mode.store(mode);
  g_int4_chunk.store(chunk);
}

bool LtGemm::usable_on(cudaStream_t stream) {
  if (!env_enabled()) return false;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  return cudaStreamIsCapturing(stream, &capture) == cudaSuccess && capture == cudaStreamCaptureStatusNone;
}

// One shape's descriptors and the algorithm cuBLASLt's heuristic picked for it. Row-major y [M, N] = xq [M, K] ·
// wᵀ is column-major yᵀ [N, M] = op(A) · B with A = w as column-major [K, N] transposed (FP8 wants "TN") and B = xq
// as column-major [K, M].
struct LtGemm::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool ok = false;
  ~Plan() {
    if (c != nullptr) cublasLtMatrixLayoutDestroy(c);
    if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
    if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
  }
};

LtGemm::LtGemm() = default;

LtGemm::~LtGemm() {
  plans_.clear();
  for (cudaEvent_t e : lane_events_) cudaEventDestroy(e);
  for (cudaStream_t l : lanes_) cudaStreamDestroy(l);
  for (auto& [stream, ws] : workspaces_) {
    if (ws != nullptr) cudaFree(ws);
  }
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

bool LtGemm::applies(const MatmulProblem& p, cudaStream_t stream) {
  if (p.experts != nullptr || p.x_rows != nullptr || p.y_rows != nullptr || p.row_scale != nullptr ||
      p.silu_gate || p.M < kMinRows || p.K % 16 != 0 || p.N % 16 != 0 || p.ldx % 4 != 0 || p.ldy % 4 != 0 ||
      !aligned16(p.x) || !aligned16(p.y)) {
    return false;
  }
  const auto w8a8 = [](const DevWeight& w) { return w.type == WType::kF8E4M3 && w.act_scale > 0 && aligned16(w.w); };
  if (!w8a8(p.weight) || (p.y2 != nullptr && (!w8a8(p.weight2) || p.weight2.act_scale != p.weight.act_scale ||
                                              !aligned16(p.y2)))) {
    return false;
  }
  return usable_on(stream);
}

size_t LtGemm::scratch_bytes(const MatmulProblem& p) { return static_cast<size_t>(p.M * p.K); }

LtGemm::Plan& LtGemm::plan(int64_t M, int64_t N, int64_t K, int64_t ldy, int batch, bool bf16) {
  std::unique_ptr<Plan>& slot = plans_[{M, N, K, ldy, batch, bf16}];
  if (slot != nullptr) return *slot;
  slot = std::make_unique<Plan>();
  Plan& p = *slot;
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  const cudaDataType_t operand = bf16 ? CUDA_R_16BF : CUDA_R_8F_E4M3;
  bool ok = cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS &&
            cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)) ==
                CUBLAS_STATUS_SUCCESS &&
            cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)) ==
                CUBLAS_STATUS_SUCCESS &&
            cublasLtMatrixLayoutCreate(&p.a, operand, static_cast<uint64_t>(K), static_cast<uint64_t>(N), K) ==
                CUBLAS_STATUS_SUCCESS &&
            cublasLtMatrixLayoutCreate(&p.b, operand, static_cast<uint64_t>(K), static_cast<uint64_t>(M), K) ==
                CUBLAS_STATUS_SUCCESS &&
            cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, static_cast<uint64_t>(N), static_cast<uint64_t>(M), ldy) ==
                CUBLAS_STATUS_SUCCESS;
  if (ok && batch > 0) {  // pointer-array batches: every matrix's address from a device array
    const int32_t count = batch;
    const uint32_t mode = CUBLASLT_BATCH_MODE_POINTER_ARRAY;
    for (cublasLtMatrixLayout_t layout : {p.a, p.b, p.c}) {
      ok = ok &&
           cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)) ==
               CUBLAS_STATUS_SUCCESS &&
           cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_MODE, &mode, sizeof(mode)) ==
               CUBLAS_STATUS_SUCCESS;
    }
  }
  if (ok) {
    cublasLtMatmulPreference_t pref = nullptr;
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const size_t ws = kWorkspaceBytes;
    // Algorithms for 16-byte aligned operands (applies(); arena arrays are 64-byte aligned), not the default 256.
    const uint32_t align = 16;
    ok = cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS &&
         cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)) ==
             CUBLAS_STATUS_SUCCESS;
    for (const auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
      ok = ok && cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align)) == CUBLAS_STATUS_SUCCESS;
    }
    ok = ok &&
         cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.c, p.c, pref, 1, &result, &found) ==
             CUBLAS_STATUS_SUCCESS &&
         found > 0;
    if (pref != nullptr) cublasLtMatmulPreferenceDestroy(pref);
    if (ok) p.algo = result.algo;
  }
  p.ok = ok;
  return p;
}

bool LtGemm::ready() {
  if (handle_ == nullptr && !broken_ && cublasLtCreate(&handle_) != CUBLAS_STATUS_SUCCESS) {
    handle_ = nullptr;
    broken_ = true;  // not tried again: the mma.sync kernels keep every problem
  }
  return handle_ != nullptr;
}

bool LtGemm::supports(int64_t M, int64_t N, int64_t K, int64_t ldy) { return ready() && plan(M, N, K, ldy).ok; }

bool LtGemm::supports_batched(int64_t M, int64_t N, int64_t K, int64_t ldy, int batch) {
  return batch > 0 && ready() && plan(M, N, K, ldy, batch).ok;
}

cudaError_t LtGemm::fp8_gemm_batched(const void* const* w, const void* const* xq, const void* const* y, int batch,
                                     int64_t M, int64_t N, int64_t K, int64_t ldy, cudaStream_t stream) {
  if (!supports_batched(M, N, K, ldy, batch)) return cudaErrorNotSupported;
  void* ws = workspace(stream);
  if (ws == nullptr) return cudaErrorNotSupported;
  Plan& pl = plan(M, N, K, ldy, batch);
  const float alpha = 1.0f, beta = 0.0f;
  // The arrays (device memory) are never written: D's parameter is a plain pointer only for the unbatched case.
  void* d = const_cast<void*>(static_cast<const void*>(y));
  const cublasStatus_t s = cublasLtMatmul(handle_, pl.desc, &alpha, w, pl.a, xq, pl.b, &beta, y, pl.c, d, pl.c,
                                          &pl.algo, ws, kWorkspaceBytes, stream);
  return s == CUBLAS_STATUS_SUCCESS ? cudaSuccess : cudaErrorUnknown;
}

void* LtGemm::workspace(cudaStream_t stream) {
  void*& ws = workspaces_[stream];
  if (ws == nullptr && cudaMalloc(&ws, kWorkspaceBytes) != cudaSuccess) {
    (void)cudaGetLastError();  // not left for the next launch's check to report
    ws = nullptr;
  }
  return ws;
}

cudaError_t LtGemm::fp8_gemm(const uint8_t* xq, int64_t M, int64_t N, int64_t K, const DevWeight& w, float* y,
                             int64_t ldy, bool accumulate, cudaStream_t stream) {
  if (!supports(M, N, K, ldy)) return cudaErrorNotSupported;
  void* ws = workspace(stream);  // one a stream: the shared expert's GEMMs run beside the routed ones
  if (ws == nullptr) return cudaErrorNotSupported;
  Plan& pl = plan(M, N, K, ldy);
  const float alpha = w.scale;  // a · weight_scale (DevWeight)
  const float beta = accumulate ? 1.0f : 0.0f;
  const cublasStatus_t s = cublasLtMatmul(handle_, pl.desc, &alpha, w.w, pl.a, xq, pl.b, &beta, y, pl.c, y, pl.c,
                                          &pl.algo, ws, kWorkspaceBytes, stream);
  return s == CUBLAS_STATUS_SUCCESS ? cudaSuccess : cudaErrorUnknown;
}

bool LtGemm::supports_bf16(int64_t M, int64_t N, int64_t K, int64_t ldy) {
  return ready() && plan(M, N, K, ldy, 0, true).ok;
}

cudaError_t LtGemm::bf16_gemm(const uint16_t* x, int64_t M, int64_t N, int64_t K, const uint16_t* w, float* y,
                              int64_t ldy, cudaStream_t stream) {
  if (!supports_bf16(M, N, K, ldy)) return cudaErrorNotSupported;
  void* ws = workspace(stream);
  if (ws == nullptr) return cudaErrorNotSupported;
  Plan& pl = plan(M, N, K, ldy, 0, true);
  const float alpha = 1.0f, beta = 0.0f;
  const cublasStatus_t s = cublasLtMatmul(handle_, pl.desc, &alpha, w, pl.a, x, pl.b, &beta, y, pl.c, y, pl.c,
                                          &pl.algo, ws, kWorkspaceBytes, stream);
  return s == CUBLAS_STATUS_SUCCESS ? cudaSuccess : cudaErrorUnknown;
}

int LtGemm::fork(cudaStream_t stream) {
  const int n = lanes_wanted();
  joining_ = 0;
  if (n <= 1) return 0;
  while (!lanes_broken_ && static_cast<int>(lanes_.size()) < n) {
    cudaStream_t l = nullptr;
    cudaEvent_t e = nullptr;
    if (lane_events_.empty() && cudaEventCreateWithFlags(&e, cudaEventDisableTiming) == cudaSuccess) {
      lane_events_.push_back(e);  // the fork
      e = nullptr;
    }
    if (lane_events_.empty() || cudaStreamCreateWithFlags(&l, cudaStreamNonBlocking) != cudaSuccess ||
        cudaEventCreateWithFlags(&e, cudaEventDisableTiming) != cudaSuccess) {
      if (l != nullptr) cudaStreamDestroy(l);
      (void)cudaGetLastError();  // not left for the next launch's check to report
      lanes_broken_ = true;
      break;
    }
    lanes_.push_back(l);
    lane_events_.push_back(e);
  }
  if (lanes_broken_) return 0;
  if (cudaEventRecord(lane_events_[0], stream) != cudaSuccess) return 0;
  for (int i = 0; i < n; ++i) {
    if (cudaStreamWaitEvent(lanes_[static_cast<size_t>(i)], lane_events_[0]) != cudaSuccess) return 0;
  }
  joining_ = n;
  return n;
}

void LtGemm::join(cudaStream_t stream) {
  for (int i = 0; i < joining_; ++i) {
    cudaEvent_t done = lane_events_[static_cast<size_t>(1 + i)];
    // A failure here leaves an error the caller's next launch check reports.
    if (cudaEventRecord(done, lanes_[static_cast<size_t>(i)]) == cudaSuccess) cudaStreamWaitEvent(stream, done);
  }
  joining_ = 0;
}

cudaError_t LtGemm::run(const MatmulProblem& p, void* xq, cudaStream_t stream) {
  if (!applies(p, stream)) return cudaErrorInvalidValue;
  // No handle or no algorithm for the shape (this cuBLASLt, this card): nothing is launched, the caller keeps its
  // kernels.
  if (!supports(p.M, p.N, p.K, p.ldy) || workspace(stream) == nullptr) return cudaErrorNotSupported;
  auto* q = static_cast<uint8_t*>(xq);
  cudaError_t e = launch_quantize_fp8(p.x, p.ldx, p.M, p.K, p.weight.act_scale, q, stream);
  if (e == cudaSuccess) e = fp8_gemm(q, p.M, p.N, p.K, p.weight, p.y, p.ldy, p.accumulate, stream);
  if (e == cudaSuccess && p.y2 != nullptr) e = fp8_gemm(q, p.M, p.N, p.K, p.weight2, p.y2, p.ldy, p.accumulate, stream);
  return e;
}

}  // namespace quatre::cuda
