// CpuBackend: the Backend ops on the host in fp32, multi-threaded over a small pool; weights stay where they are
// (e.g. the checkpoint's mmap) and are dequantised on the fly with fp32 accumulation. Depends on core only.
#pragma once

#include "core/thread_pool.h"
#include "core/backend.h"
#include "core/int4.h"

namespace quatre::cpu {

class CpuBackend final : public Backend {
 public:
  // n_threads 0: std::thread::hardware_concurrency(). int4_activations: how matmuls with 4-bit weights take x (exact
  // by default; bf16 or q8 reproduce the CUDA kernels' numerics for accuracy studies: bench_int4 --int4-act).
  explicit CpuBackend(int n_threads = 0, Int4Activations int4_activations = Int4Activations::kFp32);

  Device device() const override { return Device::kCpu; }
  MemoryResource& memory() override { return host_memory(); }
  Weight prepare_weight(const Weight& stored) override { return stored; }
  void copy_to_host(const Tensor& src, void* dst) override;
  void fill(Tensor t, float value) override;

  Tensor embed(std::span<const int32_t> ids, const Weight& table, Arena& a) override;
  Tensor rms_norm(const Tensor& x, const Weight& g, float eps, Arena& a) override;
  Tensor matmul(const Tensor& x, const Weight& w, Arena& a) override;
  void add_to(Tensor x, const Tensor& y) override;
  std::pair<Tensor, Tensor> split_cols(const Tensor& x, int64_t n_left, Arena& a) override;
  Tensor gather_rows(const Tensor& x, std::span<const int32_t> rows, Arena& a) override;

  void rope(Tensor q, Tensor k_rope, const RopeArgs& args) override;
  void kv_write(Tensor kv_cache, const Tensor& c_kv, const Tensor& k_rope, std::span<const int64_t> slots) override;
  Tensor mla_attention(const MlaArgs& args, Arena& a) override;  // mla_attention.cpp

  void rope_2d(Tensor q, Tensor k, const Rope2dArgs& args) override;                // vision_ops.cpp
  Tensor segment_attention(const SegmentAttentionArgs& args, Arena& a) override;   // vision_ops.cpp
  void gelu(Tensor x) override;                                                    // vision_ops.cpp

  Routing route(const Tensor& logits, const RouteArgs& args, Arena& a) override;  // moe.cpp
  Tensor moe(const MoeArgs& args, Arena& a) override;                             // moe.cpp
  Tensor ffn(const Tensor& x, const FfnWeights& w, Arena& a) override;            // moe.cpp

  LogitsSummary summarize_logits(Tensor logits, std::span<const LogitEdit> edits, std::span<const RowSummaryArgs> args,
                                 Arena& a) override;  // sampling.cpp
  bool can_summarize_logits() const override { return true; }

  ThreadPool& pool() { return pool_; }

 private:
  // y [M, out] = x · wᵀ into memory the caller owns.
  void matmul_into(const Tensor& x, const Weight& w, float* y, Arena& a);
  Tensor mla_naive(const MlaArgs& args, Arena& a);
  Tensor mla_absorbed(const MlaArgs& args, Arena& a);

  ThreadPool pool_;
  Int4Activations int4_activations_;
};

}  // namespace quatre::cpu
