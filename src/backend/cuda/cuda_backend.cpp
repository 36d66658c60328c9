// CudaBackend: argument checks on the host (shapes, ids, slots, block tables: everything the host can see), then
// one or a few kernel launches on the backend's stream: streams, uploads, weights, and the dense and attention ops
// here; the MoE ops in cuda_backend_moe.cpp, summarize_logits in cuda_backend_sampling.cpp, the vision tower's ops
// in cuda_backend_vision.cpp. Kernels are in the .cu files. Depends on core and the CUDA runtime.
#include "backend/cuda/cuda_backend.h"

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <limits>
#include <string>

#include <cuda_runtime_api.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_info.h"
#include "backend/cuda/gemm_lt.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/op_args.h"
#include "core/error.h"

namespace quatre::cuda {
namespace {

constexpr size_t kRingBytes = size_t{16} << 20;

}  // namespace

void* CudaMemory::allocate(size_t bytes) {
  void* p = nullptr;
  if (bytes == 0) return nullptr;
  if (cudaMalloc(&p, bytes) != cudaSuccess) {
    (void)cudaGetLastError();
    throw std::bad_alloc();
  }
  return p;
}

void CudaMemory::deallocate(void* p, size_t /*bytes*/) {
  if (p != nullptr) (void)cudaFree(p);
}

CudaBackend::CudaBackend() {
  if (device_count() == 0) throw LoadError("CUDA backend: no CUDA device is present");
  cudaStream_t s = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  stream_ = s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  side_stream_ = s;
  cudaEvent_t e = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  fork_ = e;
  CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  join_ = e;
  CUDA_CHECK(cudaMallocHost(&pinned_, kRingBytes));
  CUDA_CHECK(cudaMalloc(&staging_, kRingBytes));
  ring_bytes_ = kRingBytes;
  const char* graphs = std::getenv("QUATRE_CUDA_GRAPHS");
  step_graphs_on_ = graphs == nullptr || std::string_view(graphs) != "0";
  const char* concurrent = std::getenv("QUATRE_CUDA_CONCURRENT");
  concurrent_ = concurrent == nullptr || std::string_view(concurrent) != "0";
}

CudaBackend::~CudaBackend() {
  (void)cudaStreamSynchronize(as_stream(side_stream_));
  (void)cudaStreamSynchronize(as_stream(stream_));
  graphs_.clear();
  for (void* p : weights_) (void)cudaFree(p);
  for (auto& [key, table] : expert_tables_) (void)cudaFree(const_cast<DevWeight*>(table.d));
  for (auto& [key, copy] : kv_b_f32_) (void)cudaFree(copy);
  (void)cudaFree(staging_);
  (void)cudaFreeHost(pinned_);
  (void)cudaEventDestroy(static_cast<cudaEvent_t>(join_));
  (void)cudaEventDestroy(static_cast<cudaEvent_t>(fork_));
  (void)cudaStreamDestroy(as_stream(side_stream_));
  (void)cudaStreamDestroy(as_stream(stream_));
}

void CudaBackend::synchronize() { CUDA_CHECK(cudaStreamSynchronize(as_stream(stream_))); }

Tensor CudaBackend::run_step(const StepRecord& step, Arena& a, StepFn run) {
  if (!step_graphs_on_ || profiler_.enabled()) return run();
  return graphs_.run(step, a, as_stream(stream_), run);
}

void CudaBackend::begin_branch() {
  CHECK(!in_branch_) << "begin_branch inside a branch";
  in_branch_ = true;
  branch_forked_ = concurrent_ && !profiler_.enabled();
  if (!branch_forked_) return;
  const auto fork = static_cast<cudaEvent_t>(fork_);
  CUDA_CHECK(cudaEventRecord(fork, as_stream(stream_)));
  CUDA_CHECK(cudaStreamWaitEvent(as_stream(side_stream_), fork));
  std::swap(stream_, side_stream_);
}

void CudaBackend::end_branch() {
  CHECK(in_branch_) << "end_branch without begin_branch";
  in_branch_ = false;
  join_pending_ = branch_forked_;
  if (!branch_forked_) return;
  CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(join_), as_stream(stream_)));
  std::swap(stream_, side_stream_);
}

void CudaBackend::join_branch() {
  CHECK(!in_branch_) << "join_branch inside a branch";
  if (!join_pending_) return;
  join_pending_ = false;
  CUDA_CHECK(cudaStreamWaitEvent(as_stream(stream_), static_cast<cudaEvent_t>(join_)));
}

void CudaBackend::set_step_graphs(bool on) {
  step_graphs_on_ = on;
  if (!on) graphs_.clear();
}

void CudaBackend::set_profiling(bool on) { profiler_.enable(as_stream(stream_), on); }

std::vector<ProfileRow> CudaBackend::profile() { return profiler_.report(); }

size_t CudaBackend::upload_span(size_t bytes) { return (bytes + 255) & ~size_t{255}; }

void CudaBackend::reserve_uploads(size_t padded) {
  if (graphs_.capturing()) return;  // uploads go to the graph's own region
  if (padded > ring_bytes_) {  // a larger ring; the old one may still be read by queued copies
    synchronize();
    const size_t bytes = std::max(padded, 2 * ring_bytes_);
    void* pinned = nullptr;
    void* staging = nullptr;
    CUDA_CHECK(cudaMallocHost(&pinned, bytes));  // the new ring first: a failure leaves the old one in place
    if (const cudaError_t e = cudaMalloc(&staging, bytes); e != cudaSuccess) {
      cudaFreeHost(pinned);
      CUDA_CHECK(e);
    }
    CUDA_CHECK(cudaFree(staging_));
    CUDA_CHECK(cudaFreeHost(pinned_));
    pinned_ = pinned, staging_ = staging, ring_bytes_ = bytes;
    ring_at_ = 0;
    ++ring_wraps_;
  }
  if (ring_at_ + padded > ring_bytes_) {  // wrap: the copies out of the ring's front must have run
    synchronize();
    ring_at_ = 0;
    ++ring_wraps_;
  }
}

const void* CudaBackend::upload_bytes(const void* host, size_t bytes) {
  CHECK(!in_branch_) << "CUDA backend: an upload inside a branch (the ring belongs to the main stream)";
  if (graphs_.capturing()) return graphs_.upload(host, bytes);
  if (bytes == 0) return staging_;
  for (const RecentUpload& r : recent_) {
    if (r.host == host && r.bytes == bytes && r.wraps == ring_wraps_ &&
        std::memcmp(static_cast<const char*>(pinned_) + r.at, host, bytes) == 0) {
      return static_cast<const char*>(staging_) + r.at;
    }
  }
  const size_t padded = upload_span(bytes);
  reserve_uploads(padded);
  char* src = static_cast<char*>(pinned_) + ring_at_;
  char* dst = static_cast<char*>(staging_) + ring_at_;
  std::memcpy(src, host, bytes);
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, as_stream(stream_)));
  constexpr size_t kRecent = 8;
  if (recent_.size() == kRecent) recent_.erase(recent_.begin());
  recent_.push_back({host, bytes, ring_at_, ring_wraps_});
  ring_at_ += padded;
  return dst;
}

Tensor CudaBackend::allocate_weight(DType dtype, std::span<const int64_t> shape) {
  Tensor shaped(nullptr, dtype, shape, Device::kCuda);
  void* p = memory_.allocate(std::max<size_t>(shaped.bytes(), 1));
  weights_.push_back(p);
  owned_.insert(p);
  weight_bytes_ += shaped.bytes();
  return Tensor(p, dtype, shape, Device::kCuda);
}

Tensor CudaBackend::device_copy(const Tensor& host) {
  Tensor t = allocate_weight(host.dtype(), host.shape());
  CUDA_CHECK(cudaMemcpyAsync(t.data(), host.data(), host.bytes(), cudaMemcpyHostToDevice, as_stream(stream_)));
  return t;
}

// A 4-bit weight goes up as its three tensors (codes, scales, offsets), kept in their stored layout.
Weight CudaBackend::prepare_weight(const Weight& stored) {
  if (stored.int4) {
    if (std::string why = int4_problem(stored, "prepare_weight"); !why.empty()) throw LoadError(why);
  } else {
    (void)wtype(stored.w.dtype(), "prepare_weight");
  }
  if (stored.w.device() == Device::kCuda) return stored;
  Weight out = stored;
  out.w = device_copy(stored.w);
  if (stored.int4) {
    out.int4->scales = device_copy(stored.int4->scales);
    if (!stored.int4->is_symmetric()) out.int4->offsets = device_copy(stored.int4->offsets);
  }
  synchronize();  // the host memory (e.g. an mmap) may go away after this returns
  return out;
}

Weight CudaBackend::random_weight(DType dtype, std::span<const int64_t> shape, float std, uint64_t seed) {
  const WType t = wtype(dtype, "random_weight");
  Weight w;
  w.w = allocate_weight(dtype, shape);
  // FP8: values up to sqrt(3)·std map to 448, the E4M3 maximum, like a per-tensor-scaled checkpoint.
  w.weight_scale = t == WType::kF8E4M3 ? 1.7320508f * std / 448.0f : 1.0f;
  launched(launch_init_weight(w.w.data(), t, w.w.numel(), std, 0.0f, w.weight_scale, seed, as_stream(stream_)),
           "init_weight");
  return w;
}

// c - 8 uniform on -7..7 has variance (15² - 1) / 12 = 56/3, so s = std / sqrt(56/3) gives the values std.
Weight CudaBackend::random_int4_weight(std::span<const int64_t> shape, int64_t group_size, float std, uint64_t seed) {
  if (shape.size() != 2 || group_size <= 0 || group_size % kInt4GroupMultiple != 0 || shape[1] % group_size != 0) {
    throw InvalidRequest(fmt::format("random_int4_weight: [{}] in groups of {}: expected [out, in] with in a multiple "
                                     "of the group size, itself a multiple of {}",
                                     fmt::join(shape, ", "), group_size, kInt4GroupMultiple));
  }
  const int64_t out = shape[0], in = shape[1];
  Weight w;
  w.w = allocate_weight(DType::U8, std::vector<int64_t>{out, in / 2});
  w.int4 = Int4Weight{.scales = allocate_weight(DType::BF16, std::vector<int64_t>{out, in / group_size}),
                      .offsets = Tensor(),
                      .group_size = group_size};
  launched(launch_init_int4_weight(w.w.data_as<uint8_t>(), w.w.numel(), w.int4->scales.data_as<uint16_t>(),
                                   w.int4->scales.numel(), std / std::sqrt(56.0f / 3.0f), seed, as_stream(stream_)),
           "init_int4_weight");
  return w;
}

Weight CudaBackend::constant_weight(DType dtype, std::span<const int64_t> shape, float value) {
  const WType t = wtype(dtype, "constant_weight");
  Weight w;
  w.w = allocate_weight(dtype, shape);
  launched(launch_init_weight(w.w.data(), t, w.w.numel(), 0.0f, value, 1.0f, 0, as_stream(stream_)), "init_weight");
  return w;
}

void CudaBackend::copy_to_host(const Tensor& src, void* dst) {
  CHECK(src.device() == Device::kCuda) << "copy_to_host of a " << device_name(src.device()) << " tensor";
  const OpScope scope(profiler_, "copy_to_host", static_cast<double>(src.bytes()));
  CUDA_CHECK(cudaMemcpyAsync(dst, src.data(), src.bytes(), cudaMemcpyDeviceToHost, as_stream(stream_)));
  synchronize();
}

void CudaBackend::fill(Tensor t, float value) {
  check_f32(t, "fill target");
  const OpScope scope(profiler_, "fill");
  launched(launch_fill(t.data_as<float>(), t.numel(), value, as_stream(stream_)), "fill");
}

Tensor CudaBackend::embed(std::span<const int32_t> ids, const Weight& table, Arena& a) {
  const int64_t V = table.w.dim(0), D = weight_cols(table);
  for (int32_t id : ids) {
    if (id < 0 || id >= V) throw InvalidRequest(fmt::format("embed: token id {} outside the vocabulary of {}", id, V));
  }
  Tensor x = a.tensor(DType::F32, {static_cast<int64_t>(ids.size()), D});  // [T,D]
  const OpScope scope(profiler_, "embed");
  launched(launch_dequant_rows(dev(table, "embed"), D, upload(ids), static_cast<int64_t>(ids.size()),
                               x.data_as<float>(), as_stream(stream_)),
           "embed");
  return x;
}

Tensor CudaBackend::rms_norm(const Tensor& x, const Weight& g, float eps, Arena& a) {
  check_f32(x, "rms_norm input");
  const int64_t M = x.dim(0), n = x.dim(1);
  CHECK(g.w.numel() == n) << "rms_norm weight " << g.w.shape_string() << " for rows of " << n;
  Tensor y = a.tensor(DType::F32, {M, n});
  const OpScope scope(profiler_, "rms_norm", static_cast<double>(2 * M * n) * 4);
  launched(launch_rms_norm(x.data_as<float>(), M, n, dev(g, "rms_norm"), eps, y.data_as<float>(), as_stream(stream_)),
           "rms_norm");
  return y;
}

Tensor CudaBackend::matmul(const Tensor& x, const Weight& w, Arena& a) {
  Tensor y = a.tensor(DType::F32, {x.dim(0), weight_rows(w)});  // [M,out]
  matmul_into(y, x, w, false, a);
  return y;
}

void CudaBackend::matmul_add(Tensor y, const Tensor& x, const Weight& w, Arena& a) {
  matmul_into(std::move(y), x, w, true, a);
}

void CudaBackend::matmul_into(Tensor y, const Tensor& x, const Weight& w, bool accumulate, Arena& a) {
  check_f32(x, "matmul input");
  check_f32(y, "matmul output");
  const int64_t M = x.dim(0), in = x.dim(1), out = weight_rows(w);
  CHECK(weight_cols(w) == in) << "matmul: x has " << in << " columns, weight is " << w.w.shape_string()
                              << (w.int4 ? " (4-bit)" : "");
  CHECK_SHAPE(y, M, out);
  const OpScope scope(profiler_, [&] { return fmt::format("matmul {}x{} {}", out, in, weight_type_name(w)); },
                      static_cast<double>(stored_bytes(w) + static_cast<size_t>(M * (in + out)) * 4));
  MatmulProblem p{.x = x.data_as<float>(), .ldx = in, .M = M, .N = out, .K = in, .weight = dev(w, "matmul"),
                  .y = y.data_as<float>(), .ldy = out, .accumulate = accumulate};
  run_matmul(p, a, "matmul");
}

void CudaBackend::run_matmul(MatmulProblem p, Arena& a, const char* what) {
  MatmulProblem two = p;  // a SiLU-gated pair: gate into y, up into y2, then the gating over y as one array
  two.silu_gate = false;
  if ((!p.silu_gate || p.ldy == p.N) && LtGemm::applies(two, as_stream(stream_))) {
    if (lt_ == nullptr) lt_ = std::make_unique<LtGemm>();
    void* xq = a.allocate(LtGemm::scratch_bytes(two), 256);
    const cudaError_t e = lt_->run(two, xq, as_stream(stream_));
    if (e != cudaErrorNotSupported) {  // else nothing was launched: the mma.sync kernels below
      launched(e, what);
      if (p.silu_gate) launched(launch_silu_mul(p.y, p.y2, p.M * p.N, as_stream(stream_)), what);
      return;
    }
  }
  if (p.weight.act_scale > 0 && !p.x_quantized && p.x_rows == nullptr && p.experts == nullptr &&
      p.M >= prequantize_min_rows() && prequantize_enabled()) {
    float* xq = a.array<float>(static_cast<size_t>(p.M * p.K));
    launched(launch_quantize_act(p.x, p.ldx, p.M, p.K, p.weight.act_scale, xq, as_stream(stream_)), what);
    p.x = xq;
    p.ldx = p.K;
    p.x_quantized = true;
  }
  give_split_workspace(p, a);
  launched(launch_matmul(p, as_stream(stream_)), what);
}

void CudaBackend::add_to(Tensor x, const Tensor& y) {
  check_f32(x, "add_to target");
  check_f32(y, "add_to operand");
  CHECK(x.numel() == y.numel()) << "add_to " << x.shape_string() << " += " << y.shape_string();
  const OpScope scope(profiler_, "add", static_cast<double>(3 * x.bytes()));
  launched(launch_add(x.data_as<float>(), y.data_as<float>(), x.numel(), as_stream(stream_)), "add");
}

std::pair<Tensor, Tensor> CudaBackend::split_cols(const Tensor& x, int64_t n_left, Arena& a) {
  check_f32(x, "split_cols input");
  const int64_t M = x.dim(0), n = x.dim(1), n_right = n - n_left;
  CHECK(n_left >= 0 && n_right >= 0) << "split " << x.shape_string() << " at column " << n_left;
  Tensor left = a.tensor(DType::F32, {M, n_left}), right = a.tensor(DType::F32, {M, n_right});
  const OpScope scope(profiler_, "split_cols");
  launched(launch_split_cols(x.data_as<float>(), M, n, n_left, left.data_as<float>(), right.data_as<float>(),
                             as_stream(stream_)),
           "split_cols");
  return {left, right};
}

Tensor CudaBackend::gather_rows(const Tensor& x, std::span<const int32_t> rows, Arena& a) {
  check_f32(x, "gather_rows input");
  const int64_t M = x.dim(0), n = x.dim(1);
  for (int32_t r : rows) {
    if (r < 0 || r >= M) throw InvalidRequest(fmt::format("gather_rows: row {} of {}", r, x.shape_string()));
  }
  Tensor y = a.tensor(DType::F32, {static_cast<int64_t>(rows.size()), n});
  const OpScope scope(profiler_, "gather_rows");
  launched(launch_gather_rows(x.data_as<float>(), n, upload(rows), static_cast<int64_t>(rows.size()),
                              y.data_as<float>(), as_stream(stream_)),
           "gather_rows");
  return y;
}

void CudaBackend::set_rows(Tensor x, std::span<const int32_t> rows, std::span<const float> values) {
  check_f32(x, "set_rows target");
  const int64_t T = x.dim(0), D = x.dim(1), n = static_cast<int64_t>(rows.size());
  if (static_cast<int64_t>(values.size()) != n * D) {
    throw InvalidRequest(fmt::format("set_rows: {} values for {} rows of {}", values.size(), n, D));
  }
  for (int32_t r : rows) {
    if (r < 0 || r >= T) throw InvalidRequest(fmt::format("set_rows: row {} of {}", r, x.shape_string()));
  }
  if (n == 0) return;
  // Rows and values go up in one upload: a second one could wrap or regrow the staging ring under the first.
  std::vector<uint32_t> packed(static_cast<size_t>(n + n * D));
  std::memcpy(packed.data(), rows.data(), rows.size_bytes());
  std::memcpy(packed.data() + n, values.data(), values.size_bytes());
  const auto* up = upload(std::span<const uint32_t>(packed));
  const OpScope scope(profiler_, "set_rows");
  launched(launch_scatter_rows(reinterpret_cast<const float*>(up + n), D, reinterpret_cast<const int32_t*>(up), n,
                               x.data_as<float>(), as_stream(stream_)),
           "set_rows");
}

size_t CudaBackend::rope_upload_bytes(const RopeArgs& args) {
  return upload_span(args.inv_freq.size_bytes()) + upload_span(args.positions.size_bytes());
}

std::pair<const float*, const int32_t*> CudaBackend::upload_rope_args(const RopeArgs& args, int64_t T) {
  CHECK(static_cast<int64_t>(args.positions.size()) == T &&
        static_cast<int64_t>(args.inv_freq.size()) == args.dims.qk_rope_head_dim / 2)
      << args.positions.size() << " positions and " << args.inv_freq.size() << " frequencies for T=" << T;
  const float* inv_freq = upload(args.inv_freq);
  return {inv_freq, upload(args.positions)};
}

void CudaBackend::rope(Tensor q, Tensor k_rope, const RopeArgs& args) {
  const bool has_q = q.is_defined(), has_k = k_rope.is_defined();
  if (has_q) check_f32(q, "rope q");
  if (has_k) check_f32(k_rope, "rope k_rope");
  const MlaDims& d = args.dims;
  const int64_t T = has_q ? q.dim(0) : has_k ? k_rope.dim(0) : 0;
  if (has_q) CHECK_SHAPE(q, T, d.q_width());
  if (has_k) CHECK_SHAPE(k_rope, T, d.qk_rope_head_dim);
  CHECK(args.llama4_original_max_position_embeddings > 0) << "llama4 original_max_position_embeddings";
  const OpScope scope(profiler_, "rope");
  reserve_uploads(rope_upload_bytes(args));
  const auto [inv_freq, positions] = upload_rope_args(args, T);
  launched(launch_rope(has_q ? q.data_as<float>() : nullptr, has_k ? k_rope.data_as<float>() : nullptr, T, d.n_heads,
                       d.qk_nope_head_dim, d.qk_rope_head_dim, inv_freq, positions, args.llama4_beta,
                       args.llama4_original_max_position_embeddings, as_stream(stream_)),
           "rope");
}

// Every slot within the cache [n_blocks, block_size, W] (a bad one is the request's fault, not the step's).
static void check_slots(const Tensor& kv_cache, std::span<const int64_t> slots, const char* op) {
  const int64_t n_slots = kv_cache.dim(0) * kv_cache.dim(1);
  for (int64_t slot : slots) {
    if (slot < 0 || slot >= n_slots) throw InvalidRequest(fmt::format("{}: slot {} of {}", op, slot, n_slots));
  }
}

void CudaBackend::kv_write(Tensor kv_cache, const Tensor& c_kv, const Tensor& k_rope, std::span<const int64_t> slots) {
  const WType ct = cache_type(kv_cache, "kv cache");
  check_f32(c_kv, "kv_write c_kv");
  check_f32(k_rope, "kv_write k_rope");
  const int64_t T = c_kv.dim(0), R = c_kv.dim(1), Dr = k_rope.dim(1), W = kv_cache.dim(2);
  CHECK(W == R + Dr && k_rope.dim(0) == T && static_cast<int64_t>(slots.size()) == T)
      << "kv_write of " << c_kv.shape_string() << " and " << k_rope.shape_string() << " into " << kv_cache.shape_string();
  check_slots(kv_cache, slots, "kv_write");
  const OpScope scope(profiler_, "kv_write");
  launched(launch_kv_write(kv_cache.data(), ct, W, c_kv.data_as<float>(), R, k_rope.data_as<float>(), Dr,
                           upload(slots), T, as_stream(stream_)),
           "kv_write");
}

void CudaBackend::rope_kv_write(Tensor q, Tensor kv_cache, const Tensor& kv_a, const Weight& kv_norm, float eps,
                                const RopeArgs& rope_args, std::span<const int64_t> slots, Arena& /*a*/) {
  const WType ct = cache_type(kv_cache, "kv cache");
  check_f32(kv_a, "rope_kv_write kv_a");
  const MlaDims& d = rope_args.dims;
  const int64_t T = kv_a.dim(0), R = d.kv_lora_rank, Dr = d.qk_rope_head_dim;
  CHECK_SHAPE(kv_a, T, R + Dr);
  if (q.is_defined()) {
    check_f32(q, "rope_kv_write q");
    CHECK_SHAPE(q, T, d.q_width());
  }
  CHECK(kv_cache.dim(2) == R + Dr && static_cast<int64_t>(slots.size()) == T)
      << "rope_kv_write of " << kv_a.shape_string() << " (" << slots.size() << " slots) into "
      << kv_cache.shape_string();
  CHECK(kv_norm.w.numel() == R) << "rope_kv_write kv_norm " << kv_norm.w.shape_string() << " for kv_lora_rank " << R;
  CHECK(rope_args.llama4_original_max_position_embeddings > 0) << "llama4 original_max_position_embeddings";
  check_slots(kv_cache, slots, "rope_kv_write");
  const OpScope scope(profiler_, "rope_kv_write", static_cast<double>(kv_a.bytes() + 2 * (q.is_defined() ? q.bytes() : 0)));
  reserve_uploads(upload_span(slots.size_bytes()) + rope_upload_bytes(rope_args));
  const auto [inv_freq, positions] = upload_rope_args(rope_args, T);
  const RopeKvWriteLaunch l{.q = q.is_defined() ? q.data_as<float>() : nullptr,
                            .n_heads = d.n_heads,
                            .nope = d.qk_nope_head_dim,
                            .cache = kv_cache.data(),
                            .cache_type = ct,
                            .kv_a = kv_a.data_as<float>(),
                            .R = R,
                            .Dr = Dr,
                            .norm = dev(kv_norm, "kv_a_norm"),
                            .eps = eps,
                            .inv_freq = inv_freq,
                            .positions = positions,
                            .llama4_beta = rope_args.llama4_beta,
                            .llama4_original_max = rope_args.llama4_original_max_position_embeddings,
                            .slots = upload(slots),
                            .T = T};
  launched(launch_rope_kv_write(l, as_stream(stream_)), "rope_kv_write");
}

Tensor CudaBackend::mla_attention(const MlaArgs& args, Arena& a) {
  const MlaDims& d = args.dims;
  CHECK(args.meta != nullptr) << "mla_attention without attention metadata";
  const AttnMeta& m = *args.meta;
  const int64_t T = args.q.dim(0), R = d.kv_lora_rank;
  check_f32(args.q, "mla_attention q");
  const WType ct = cache_type(args.kv_cache, "mla_attention kv_cache");
  CHECK_SHAPE(args.q, T, d.q_width());
  CHECK(args.kv_cache.rank() == 3 && args.kv_cache.dim(2) == d.cache_width()) << args.kv_cache.shape_string();
  const int64_t kvb_rows = d.n_heads * (d.qk_nope_head_dim + d.v_head_dim);
  CHECK(args.kv_b.w.dim(0) == kvb_rows && weight_cols(args.kv_b) == R) << "kv_b " << args.kv_b.w.shape_string();
  CHECK(!args.kv_b.activation_scale) << "kv_b with an activation scale: the attention absorbs kv_b (W8A16 there)";
  const int64_t n_blocks = args.kv_cache.dim(0), block_size = args.kv_cache.dim(1);
  check_attn_meta(m, T, n_blocks, block_size);
  const int64_t acc = args.form == MlaForm::kNaive ? d.v_head_dim : R;
  CHECK(acc <= 512 && R + d.qk_rope_head_dim + d.qk_nope_head_dim + d.v_head_dim <= kMlaMaxWidth)
      << "mla_attention: kv_lora_rank " << R << " / v_head_dim " << d.v_head_dim << " over the kernel's limits";
  // The tiled path reads kv_b as stored when it is a float type; otherwise (4-bit, or the per-head kernel) an fp32 copy.
  const bool is_tiled = mla_is_tiled(R, d.qk_rope_head_dim, args.form == MlaForm::kNaive, args.kv_cache.data());
  const bool is_kvb_stored = is_tiled && !args.kv_b.int4;
  const float* kv_b = is_kvb_stored ? nullptr : kv_b_f32(args.kv_b, kvb_rows, R, a);  // [H*(Dn+Dv), R] fp32
  const DevWeight kv_b_w = is_kvb_stored ? dev(args.kv_b, "kv_b") : DevWeight{.w = kv_b, .type = WType::kF32};
  Tensor o = a.tensor(DType::F32, {T, d.n_heads * d.v_head_dim});  // [T, H*Dv]
  const double kvb_bytes = is_kvb_stored ? static_cast<double>(args.kv_b.w.bytes()) : static_cast<double>(kvb_rows * R) * 4;
  reserve_uploads(upload_span(std::span(m.seq_index).size_bytes()) + upload_span(std::span(m.context_lens).size_bytes()) +
                  upload_span(std::span(m.block_tables).size_bytes()));
  const MlaLaunch l{.q = args.q.data_as<float>(),
                    .cache = args.kv_cache.data(),
                    .cache_type = ct,
                    .block_size = block_size,
                    .kv_b = kv_b,
                    .kv_b_w = kv_b_w,
                    .kv_b_w_stored = is_kvb_stored,
                    .seq_index = upload(m.seq_index),
                    .context_lens = upload(m.context_lens),
                    .block_tables = upload(m.block_tables),
                    .max_blocks_per_seq = m.max_blocks_per_seq,
                    .T = T,
                    .H = d.n_heads,
                    .R = R,
                    .Dn = d.qk_nope_head_dim,
                    .Dr = d.qk_rope_head_dim,
                    .Dv = d.v_head_dim,
                    .softmax_scale = args.softmax_scale,
                    .naive = args.form == MlaForm::kNaive,
                    .bf16_operands = args.bf16_operands,
                    .o = o.data_as<float>()};
  // Prompt runs that pay in the naive form (BF16 operands only: it rounds k and v too) take the prefill kernel; the
  // tokens between them, the absorbed kernels. Decode steps (one token a sequence, the recorded ones) never do.
  const bool naive_prefill =
      args.bf16_operands && mla_prefill_dims_supported(d.qk_nope_head_dim, d.qk_rope_head_dim, d.v_head_dim);
  struct Run {
    int64_t t0, n, c_end;
  };
  std::vector<Run> runs;  // the ones that pay, in token order
  int64_t max_keys = 0;
  for (int64_t t = 0; t < T && naive_prefill;) {
    int64_t end = t + 1;  // the run: one sequence, contexts growing by one a token
    while (end < T && m.seq_index[end] == m.seq_index[t] && m.context_lens[end] == m.context_lens[end - 1] + 1) ++end;
    const int64_t n = end - t, c_end = m.context_lens[end - 1];
    const int64_t pairs = n * (m.context_lens[t] + c_end) / 2;
    if (mla_prefill_pays(n, pairs, c_end, R, d.qk_nope_head_dim, d.qk_rope_head_dim, d.v_head_dim)) {
      runs.push_back({t, n, c_end});
      max_keys = std::max(max_keys, c_end);
    }
    t = end;
  }
  // One scratch for every run (they run one after another on the stream), sized for the most keys a chunk and the
  // longest run.
  int64_t max_run = 0;
  for (const Run& r : runs) max_run = std::max(max_run, r.n);
  const PrefillScratch scratch =
      runs.empty() ? PrefillScratch{} : prefill_scratch(d, std::min(max_keys, mla_prefill_chunk_keys()), max_run, a);
  int64_t done = 0;  // tokens before this one are launched
  for (const Run& r : runs) {
    if (r.t0 > done) mla_absorbed(l, done, r.t0 - done, is_tiled, kvb_bytes, args, a);
    mla_prefill(l, r.t0, r.n, r.c_end, scratch, args, a);
    done = r.t0 + r.n;
  }
  if (done < T) mla_absorbed(l, done, T - done, is_tiled, kvb_bytes, args, a);
  return o;
}

CudaBackend::PrefillScratch CudaBackend::prefill_scratch(const MlaDims& d, int64_t keys, int64_t rows, Arena& a) {
  const int64_t H = d.n_heads;
  return {.k = a.array<uint16_t>(static_cast<size_t>(H * keys * (d.qk_nope_head_dim + d.qk_rope_head_dim))),
          .v = a.array<uint16_t>(static_cast<size_t>(H * keys * d.v_head_dim)),
          .lat = a.array<float>(static_cast<size_t>(keys * d.cache_width())),
          .kv = a.array<float>(static_cast<size_t>(keys * H * (d.qk_nope_head_dim + d.v_head_dim))),
          .ml = a.array<float>(static_cast<size_t>(rows * H * 2))};
}

// Tokens [t0, t0 + n) of the step on the absorbed kernels (l: the whole step's launch).
void CudaBackend::mla_absorbed(const MlaLaunch& l, int64_t t0, int64_t n, bool is_tiled, double kvb_bytes,
                               const MlaArgs& args, Arena& a) {
  const MlaDims& d = args.dims;
  const int64_t R = d.kv_lora_rank;
  MlaLaunch launch = l;
  launch.T = n;
  launch.q = l.q + t0 * d.q_width();
  launch.seq_index = l.seq_index + t0;
  launch.context_lens = l.context_lens + t0;
  launch.o = l.o + t0 * d.n_heads * d.v_head_dim;
  if (is_tiled) {
    // Keys split by what the block tables can hold, not by the longest context: a recorded step (run_step) keeps
    // its split count while its sequences grow; each split finds its keys from the context lengths on the device.
    launch.n_splits = mla_splits(n, d.n_heads, R, l.Dr, l.naive, l.cache_type, l.max_blocks_per_seq * l.block_size);
    const auto rows = static_cast<size_t>(n * d.n_heads * launch.n_splits);
    launch.q_abs = a.array<float>(static_cast<size_t>(n * d.n_heads * R));
    if (launch.n_splits > 1) launch.split_ctx = a.array<float>(rows * static_cast<size_t>(R));
    launch.split_ml = a.array<float>(rows * 2);
  }
  if (!profiler_.enabled()) {
    launched(launch_mla(launch, as_stream(stream_)), "mla_attention");
    return;
  }
  // Profiled: the three kernels one by one, with the bytes each must read (W_UK, the cache, W_UV).
  int64_t entries = 0;
  for (int64_t t = t0; t < t0 + n; ++t) entries += args.meta->context_lens[static_cast<size_t>(t)];
  const double cache_bytes = static_cast<double>(entries * d.cache_width() * dtype_size(args.kv_cache.dtype()));
  const double uk_share = static_cast<double>(d.qk_nope_head_dim) / static_cast<double>(d.qk_nope_head_dim + d.v_head_dim);
  struct Stage {
    MlaStage stage;
    const char* label;
    double bytes;
  };
  for (const Stage& st : {Stage{MlaStage::kQAbs, "mla q_abs", kvb_bytes * uk_share},
                          Stage{MlaStage::kAttend, "mla attend", cache_bytes},
                          Stage{MlaStage::kCombine, "mla combine", kvb_bytes * (1 - uk_share)}}) {
    const OpScope stage_scope(profiler_, st.label, st.bytes);
    launched(launch_mla(launch, as_stream(stream_), st.stage), st.label);
  }
}

// Tokens [t0, t0 + n) of the step, one sequence's prompt run over its entries [0, c_end), in the naive form
// (mla_prefill.cu), chunk by chunk of keys: the latents gathered, expanded by kv_b on the matmul kernels, packed to
// BF16 heads, attended (the running softmax carried from chunk to chunk).
void CudaBackend::mla_prefill(const MlaLaunch& l, int64_t t0, int64_t n, int64_t c_end, const PrefillScratch& scratch,
                              const MlaArgs& args, Arena& a) {
  const MlaDims& d = args.dims;
  const int64_t H = d.n_heads, R = d.kv_lora_rank, chunk = mla_prefill_chunk_keys();
  const int32_t seq = args.meta->seq_index[static_cast<size_t>(t0)];
  for (int64_t k0 = 0; k0 < c_end; k0 += chunk) {
    const int64_t keys = std::min(chunk, c_end - k0);
    MlaPrefillLaunch p{.q = l.q + t0 * d.q_width(),
                       .cache = l.cache,
                       .cache_type = l.cache_type,
                       .block_size = l.block_size,
                       .table = l.block_tables + static_cast<int64_t>(seq) * l.max_blocks_per_seq,
                       .context_lens = l.context_lens + t0,
                       .n = n,
                       .c_end = keys,
                       .H = H,
                       .R = R,
                       .Dn = d.qk_nope_head_dim,
                       .Dr = d.qk_rope_head_dim,
                       .Dv = d.v_head_dim,
                       .k0 = k0,
                       .first = k0 == 0,
                       .last = k0 + keys == c_end,
                       .softmax_scale = args.softmax_scale,
                       .k = scratch.k,
                       .v = scratch.v,
                       .ml = scratch.ml,
                       .o = l.o + t0 * H * d.v_head_dim};
    {
      const OpScope scope(profiler_, "mla prefill expand");
      launched(launch_mla_prefill_gather(p, scratch.lat, as_stream(stream_)), "mla prefill gather");
      MatmulProblem mm{.x = scratch.lat, .ldx = d.cache_width(), .M = keys, .N = H * (d.qk_nope_head_dim + d.v_head_dim),
                       .K = R, .weight = l.kv_b_w, .y = scratch.kv, .ldy = H * (d.qk_nope_head_dim + d.v_head_dim)};
      give_split_workspace(mm, a);
      launched(launch_matmul(mm, as_stream(stream_)), "mla prefill kv_b");
    }
    {
      const OpScope scope(profiler_, "mla prefill pack");
      launched(launch_mla_prefill_pack(p, scratch.lat, scratch.kv, as_stream(stream_)), "mla prefill pack");
    }
    const OpScope scope(profiler_, "mla prefill attend");
    launched(launch_mla_prefill_attend(p, as_stream(stream_)), "mla prefill attend");
  }
}

const float* CudaBackend::kv_b_f32(const Weight& kv_b, int64_t rows, int64_t R, Arena& a) {
  const void* key = kv_b.w.data();
  if (auto it = kv_b_f32_.find(key); it != kv_b_f32_.end()) return static_cast<const float*>(it->second);
  // Kept only when made outside a graph capture (a captured dequantisation runs at the graph's launches only).
  const bool owned = owned_.count(key) > 0 && !graphs_.capturing();
  const auto n = static_cast<size_t>(rows * R);
  float* out = owned ? static_cast<float*>(memory_.allocate(n * sizeof(float))) : a.array<float>(n);
  const OpScope scope(profiler_, "mla kv_b dequant", static_cast<double>(kv_b.w.bytes() + n * sizeof(float)));
  launched(launch_dequant_rows(dev(kv_b, "kv_b"), R, nullptr, rows, out, as_stream(stream_)), "kv_b");
  if (owned) kv_b_f32_[key] = out;
  return out;
}

}  // namespace quatre::cuda
