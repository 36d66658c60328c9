// CudaBackend: every Backend op on one CUDA GPU, on one stream. Weights are copied to the device in their stored
// dtype (FP8 stays FP8, BF16 stays BF16, 4-bit stays codes + BF16 scales) and dequantised inside the kernels;
// activations are F32 in device Arenas; host metadata (token ids, positions, slots, block tables) goes up through a
// pinned staging ring, with no allocation per op and no host sync inside a step except copy_to_host. Depends on core
// and the CUDA runtime.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <memory>
#include <span>
#include <vector>

#include "backend/cuda/op_profiler.h"
#include "backend/cuda/step_graphs.h"
#include "core/backend.h"

namespace quatre::cuda {

struct DevWeight;
struct MlaLaunch;
struct MatmulProblem;
class LtGemm;

// cudaMalloc / cudaFree on the current device.
class CudaMemory final : public MemoryResource {
 public:
  Device device() const override { return Device::kCuda; }
  void* allocate(size_t bytes) override;
  void deallocate(void* p, size_t bytes) override;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend();  // throws LoadError when no CUDA device is present
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  Device device() const override { return Device::kCuda; }
  MemoryResource& memory() override { return memory_; }
  Weight prepare_weight(const Weight& stored) override;
  void copy_to_host(const Tensor& src, void* dst) override;
  void fill(Tensor t, float value) override;

  Tensor embed(std::span<const int32_t> ids, const Weight& table, Arena& a) override;
  Tensor rms_norm(const Tensor& x, const Weight& g, float eps, Arena& a) override;
  Tensor matmul(const Tensor& x, const Weight& w, Arena& a) override;
  void add_to(Tensor x, const Tensor& y) override;
  std::pair<Tensor, Tensor> split_cols(const Tensor& x, int64_t n_left, Arena& a) override;
  Tensor gather_rows(const Tensor& x, std::span<const int32_t> rows, Arena& a) override;
  void set_rows(Tensor x, std::span<const int32_t> rows, std::span<const float> values) override;
  bool can_set_rows() const override { return true; }

  void rope(Tensor q, Tensor k_rope, const RopeArgs& args) override;
  void kv_write(Tensor kv_cache, const Tensor& c_kv, const Tensor& k_rope, std::span<const int64_t> slots) override;
  void rope_kv_write(Tensor q, Tensor kv_cache, const Tensor& kv_a, const Weight& kv_norm, float eps,
                     const RopeArgs& rope_args, std::span<const int64_t> slots, Arena& a) override;
  Tensor mla_attention(const MlaArgs& args, Arena& a) override;

  // The vision tower's ops (cuda_backend_vision.cpp, vision_kernels.cu).
  void rope_2d(Tensor q, Tensor k, const Rope2dArgs& args) override;
  Tensor segment_attention(const SegmentAttentionArgs& args, Arena& a) override;
  void gelu(Tensor x) override;

  Routing route(const Tensor& logits, const RouteArgs& args, Arena& a) override;
  Tensor moe(const MoeArgs& args, Arena& a) override;
  Tensor ffn(const Tensor& x, const FfnWeights& w, Arena& a) override;
  void matmul_add(Tensor y, const Tensor& x, const Weight& w, Arena& a) override;

  // Edits and row arguments go up in one upload; the summaries come down in one copy (sampling_kernels.cu).
  LogitsSummary summarize_logits(Tensor logits, std::span<const LogitEdit> edits, std::span<const RowSummaryArgs> args,
                                 Arena& a) override;
  bool can_summarize_logits() const override { return true; }

  // Steps as CUDA graphs (step_graphs.h): on unless QUATRE_CUDA_GRAPHS=0 in the environment or set_step_graphs(false);
  // off while profiling (the profiler's events bracket each op).
  Tensor run_step(const StepRecord& step, Arena& a, StepFn run) override;
  void begin_branch() override;
  void end_branch() override;
  void join_branch() override;
  void set_step_graphs(bool on);
  StepGraphs::Stats step_graph_stats() const { return graphs_.stats(); }

  // A device weight [out, in] (or [n]) of `dtype` drawn on the GPU: uniform values of standard deviation `std`
  // before quantisation; FP8 weights get a per-tensor scale so that their bytes span the E4M3 range. For
  // --random-weights: no checkpoint, nothing through host memory.
  Weight random_weight(DType dtype, std::span<const int64_t> shape, float std, uint64_t seed);
  // A symmetric 4-bit device weight [out, in] in groups of group_size (core/int4.h), drawn on the GPU: codes uniform
  // in 1..15 (values s * (code - 8), mean 0) and one BF16 scale s for every group, so that the values have standard
  // deviation `std` (to BF16 rounding of s).
  Weight random_int4_weight(std::span<const int64_t> shape, int64_t group_size, float std, uint64_t seed);
  // A device weight whose every element is `value` (norm gains).
  Weight constant_weight(DType dtype, std::span<const int64_t> shape, float value);
  void synchronize();
  size_t weight_bytes() const { return weight_bytes_; }
  // GPU time per op from now on (bench --profile); profile() waits for the stream and returns the sums since.
  void set_profiling(bool on);
  std::vector<ProfileRow> profile();

 private:
  // Copies host data to the device through the staging ring; valid for the ops enqueued after it.
  template <typename T>
  const T* upload(std::span<const T> host) {
    return static_cast<const T*>(upload_bytes(host.data(), host.size_bytes()));
  }
  const void* upload_bytes(const void* host, size_t bytes);
  // A device tensor that this backend owns (freed with it, counted in weight_bytes); device_copy also enqueues the
  // copy of `host` into it (the caller synchronises before the host memory may go).
  Tensor allocate_weight(DType dtype, std::span<const int64_t> shape);
  Tensor device_copy(const Tensor& host);
  // An op that takes several upload pointers reserves their padded sizes first: no upload after it wraps the
  // ring (which would overwrite an earlier pointer's bytes, a reused one's too) or regrows it (which would free
  // them) until that many bytes have gone up.
  void reserve_uploads(size_t padded_bytes);
  static size_t upload_span(size_t bytes);  // the ring bytes one upload takes
  static size_t rope_upload_bytes(const RopeArgs& args);  // what upload_rope_args puts in the ring
  // A rope launch's frequencies and positions uploaded (after their reserve_uploads), checked against T tokens.
  std::pair<const float*, const int32_t*> upload_rope_args(const RopeArgs& args, int64_t T);
  // The device table of the E experts' gate, up or down weights ([3][E] DevWeights), built at first use, and the
  // W8A8 activation scale all their gates and ups share (0: none, or not one for all).
  struct ExpertTable {
    const DevWeight* d = nullptr;
    float shared_gate_act = 0.0f;
  };
  ExpertTable expert_table(std::span<const FfnWeights> experts);
  // y = x · wᵀ, or y += x · wᵀ (accumulate, in the matmul's store).
  void matmul_into(Tensor y, const Tensor& x, const Weight& w, bool accumulate, Arena& a);
  // launch_matmul(p), or cuBLASLt for a large plain W8A8 problem (gemm_lt.h); p's workspaces from `a`. A W8A8
  // input of prequantize_min_rows() rows or more is quantised once first (x_quantized).
  void run_matmul(MatmulProblem p, Arena& a, const char* what);
  // A prompt's routed W8A8 experts through cuBLASLt, expert by expert, over moe()'s grouping (groups of G rows,
  // max_rows; gate and up: scratch). Each pair's output, before its gate, is row row_of_pair[p] of rows. false,
  // having launched nothing, where it does not apply (cuda_backend_moe.cpp says when).
  struct ExpertRows {
    const float* rows = nullptr;          // [max_rows, D], in the grouping's order
    const int32_t* row_of_pair = nullptr;  // [T*K]
    const float* row_scale = nullptr;     // null, or rows' factor a group of G rows (unscaled sums)
    int G = 1;
  };
  bool routed_experts_lt(const MoeArgs& args, int G, int64_t max_rows, const int32_t* sorted_token,
                         const int32_t* sorted_pair, const int32_t* group_expert, float* gate, float* up,
                         ExpertRows& out, Arena& a);
  // Its path for 4-bit experts: dequantised to BF16 a chunk of experts at a time, BF16 GEMMs.
  bool routed_int4_experts_lt(const MoeArgs& args, int G, int64_t max_rows, const int32_t* sorted_token,
                              const int32_t* sorted_pair, const int32_t* group_expert, float* gate, float* up,
                              ExpertRows& out, Arena& a);
  // kv_b [rows, R] dequantised to fp32: kept per weight for the weights this backend owns (prepared or drawn,
  // never rewritten), else written to `a` on every call.
  const float* kv_b_f32(const Weight& kv_b, int64_t rows, int64_t R, Arena& a);
  // mla_attention's two paths over tokens [t0, t0 + n) of the step whose whole launch is l.
  void mla_absorbed(const MlaLaunch& l, int64_t t0, int64_t n, bool is_tiled, double kvb_bytes, const MlaArgs& args,
                    Arena& a);
  struct PrefillScratch {  // mla_prefill's buffers for chunks of up to `keys` keys, runs of up to `rows` tokens
    uint16_t* k = nullptr;   // BF16 [H, keys, Dn+Dr]
    uint16_t* v = nullptr;   // BF16 [H, keys, Dv]
    float* lat = nullptr;    // [keys, R+Dr]
    float* kv = nullptr;     // [keys, H*(Dn+Dv)]
    float* ml = nullptr;     // [rows, H, 2]
  };
  static PrefillScratch prefill_scratch(const MlaDims& d, int64_t keys, int64_t rows, Arena& a);
  void mla_prefill(const MlaLaunch& l, int64_t t0, int64_t n, int64_t c_end, const PrefillScratch& scratch,
                   const MlaArgs& args, Arena& a);

  CudaMemory memory_;
  void* stream_ = nullptr;  // cudaStream_t
  // Branches (begin_branch): their ops go to side_stream_ (stream_ and side_stream_ swap until end_branch), after
  // fork_ on the main stream; join_ on the side orders join_branch's later ops after them. A graph capture takes
  // both streams. Small batches leave most SMs idle in either chain alone. QUATRE_CUDA_CONCURRENT=0 (read at
  // construction) keeps branches in issue order on one stream, as does profiling.
  void* side_stream_ = nullptr;  // cudaStream_t
  void* fork_ = nullptr;         // cudaEvent_t
  void* join_ = nullptr;         // cudaEvent_t
  bool concurrent_ = true;
  bool in_branch_ = false;      // between begin_branch and end_branch
  bool branch_forked_ = false;  // the branch runs on side_stream_
  bool join_pending_ = false;   // join_branch has a side to wait for
  std::vector<void*> weights_;   // device allocations of prepared weights
  size_t weight_bytes_ = 0;
  // Staging ring: pinned host and device buffers of the same size, filled front to back; wrapping waits for the
  // stream once (the copies from the ring's front must be done before it is overwritten).
  void* pinned_ = nullptr;
  void* staging_ = nullptr;
  size_t ring_bytes_ = 0, ring_at_ = 0;
  uint64_t ring_wraps_ = 0;
  // The last uploads, reused while the ring has not wrapped and the host bytes are the same (a step uploads the
  // same positions, slots and block tables for every layer).
  struct RecentUpload {
    const void* host = nullptr;
    size_t bytes = 0, at = 0;
    uint64_t wraps = 0;
  };
  std::vector<RecentUpload> recent_;
  std::map<const void*, void*> kv_b_f32_;  // kv_b weight -> its fp32 copy
  std::set<const void*> owned_;            // device weights allocated here (weights_)
  OpProfiler profiler_;
  StepGraphs graphs_;
  bool step_graphs_on_ = true;
  std::map<const void*, ExpertTable> expert_tables_;  // experts.data() -> device [3][E] DevWeight
  std::unique_ptr<LtGemm> lt_;                   // cuBLASLt's handle and plans
  std::vector<std::byte> summary_up_, summary_down_;  // summarize_logits' host staging
  std::vector<int32_t> attention_tiles_;              // segment_attention's tiles before their upload
};

}  // namespace quatre::cuda
