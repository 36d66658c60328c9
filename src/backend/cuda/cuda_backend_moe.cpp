// CudaBackend's MoE ops: routing on the device, the dense SiLU-gated FFN (the shared expert), and the routed experts
// grouped per expert (moe_kernels.cu, matmul*.cu). Depends on core and the CUDA runtime.
#include "backend/cuda/cuda_backend.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <limits>
#include <map>
#include <vector>

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/env_switch.h"
#include "backend/cuda/gemm_lt.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/op_args.h"
#include "core/error.h"
#include "core/int4.h"

namespace quatre::cuda {

namespace {

// The per-expert row groups of T*K (token, k) pairs over E experts: G rows a group (8 when the experts see at most
// wide_from pairs each on average: the small-M kernels; else 64: the tile kernel, or the 4-bit experts' wide groups);
// expert e takes ceil(c_e / G) groups for its c_e pairs, at most T*K/G + (experts with a pair) in all. The grouping's
// I32 array: sorted_token [max_rows] | sorted_pair [max_rows] | group_expert [max_rows / G].
struct PairGroups {
  int G = 0;
  int64_t max_rows = 0;
  int64_t ints() const { return 2 * max_rows + max_rows / G; }
};

PairGroups pair_groups(int64_t T, int64_t K, int64_t E, int64_t wide_from = 16) {
  const int G = T * K <= wide_from * E ? 8 : 64;
  return {.G = G, .max_rows = std::min((T * K + E * (G - 1) + G - 1) / G, T * K / G + std::min(E, T * K)) * G};
}

// Routings of at most this many pairs are grouped in the same launch (one block of 32 warps routing in turn). H100
// profile, a layer: 12 us at batch 1 against 16 for the two launches; but 36 us at batch 64 (256 pairs, the step
// 0.2 ms slower than with the two launches).
constexpr int64_t kMaxPairsRoutedAndGrouped = 64;

}  // namespace

Routing CudaBackend::route(const Tensor& logits, const RouteArgs& args, Arena& a) {
  check_f32(logits, "route logits");
  const int64_t T = logits.dim(0), E = logits.dim(1), K = args.n_experts_per_tok;
  if (K < 1 || K > E || E > 1024) {
    throw InvalidRequest(fmt::format("route: top-{} of {} experts (the CUDA router takes up to 1024)", K, E));
  }
  Routing r{.expert_ids = a.tensor(DType::I32, {T, K}), .gates = a.tensor(DType::F32, {T, K})};
  if (T * K <= kMaxPairsRoutedAndGrouped) {
    const PairGroups pg = pair_groups(T, K, E);
    r.grouping = a.tensor(DType::I32, {pg.ints()});
    int32_t* g = r.grouping.data_as<int32_t>();
    const OpScope scope(profiler_, "route+align");
    launched(launch_route_align(logits.data_as<float>(), T, E, K, args.routed_scaling_factor,
                                r.expert_ids.data_as<int32_t>(), r.gates.data_as<float>(), pg.G, pg.max_rows, g,
                                g + pg.max_rows, g + 2 * pg.max_rows, as_stream(stream_)),
             "route+align");
    return r;
  }
  const OpScope scope(profiler_, "route");
  launched(launch_route(logits.data_as<float>(), T, E, K, args.routed_scaling_factor, r.expert_ids.data_as<int32_t>(),
                        r.gates.data_as<float>(), as_stream(stream_)),
           "route");
  return r;
}

// down(silu(gate·x) ⊙ up·x): gate, up and the SiLU-gating in one launch (same x and shapes; the gating in the same
// kernel where it is the FMA or staged one, launch_matmul's silu_gate), then down.
Tensor CudaBackend::ffn(const Tensor& x, const FfnWeights& w, Arena& a) {
  check_f32(x, "ffn input");
  const int64_t M = x.dim(0), D = x.dim(1), F = weight_rows(w.gate);
  CHECK(weight_cols(w.gate) == D && weight_cols(w.up) == D && weight_rows(w.up) == F && weight_rows(w.down) == D &&
        weight_cols(w.down) == F)
      << "ffn weights " << w.gate.w.shape_string() << " / " << w.up.w.shape_string() << " / " << w.down.w.shape_string()
      << " for x " << x.shape_string();
  const DevWeight gate = dev(w.gate, "ffn gate"), up = dev(w.up, "ffn up"), down = dev(w.down, "ffn down");
  Tensor g = a.tensor(DType::F32, {M, F}), u = a.tensor(DType::F32, {M, F});  // [M,F] each
  MatmulProblem p{.x = x.data_as<float>(), .ldx = D, .M = M, .N = F, .K = D, .weight = gate, .y = g.data_as<float>(),
                  .ldy = F};
  {
    const OpScope scope(profiler_, [&] { return fmt::format("matmul {}x{} {} (gate+up+silu)", F, D, weight_type_name(w.gate)); },
                        static_cast<double>(stored_bytes(w.gate) + stored_bytes(w.up) + static_cast<size_t>(M * (D + 2 * F)) * 4));
    if (same_layout(up, gate) && up.act_scale == gate.act_scale) {
      p.weight2 = up;
      p.y2 = u.data_as<float>();
      p.silu_gate = true;
      run_matmul(p, a, "ffn gate+up");
    } else {
      run_matmul(p, a, "ffn gate");
      p.weight = up;
      p.y = u.data_as<float>();
      run_matmul(p, a, "ffn up");
      launched(launch_silu_mul(g.data_as<float>(), u.data_as<float>(), g.numel(), as_stream(stream_)), "silu_mul");
    }
  }
  Tensor y = a.tensor(DType::F32, {M, D});  // [M,D]
  MatmulProblem q{.x = g.data_as<float>(), .ldx = F, .M = M, .N = D, .K = F, .weight = down,
                  .y = y.data_as<float>(), .ldy = D};
  const OpScope scope(profiler_, [&] { return fmt::format("matmul {}x{} {}", D, F, weight_type_name(w.down)); },
                      static_cast<double>(stored_bytes(w.down) + static_cast<size_t>(M * (D + F)) * 4));
  run_matmul(q, a, "ffn down");
  return y;
}

CudaBackend::ExpertTable CudaBackend::expert_table(std::span<const FfnWeights> experts) {
  auto it = expert_tables_.find(experts.data());
  if (it != expert_tables_.end()) return it->second;
  const size_t E = experts.size();
  std::vector<DevWeight> host(3 * E);
  for (size_t e = 0; e < E; ++e) {
    host[e] = dev(experts[e].gate, "expert gate");
    host[E + e] = dev(experts[e].up, "expert up");
    host[2 * E + e] = dev(experts[e].down, "expert down");
    for (size_t j = 0; j < 3; ++j) {
      CHECK(same_layout(host[j * E + e], host[j * E]) && (host[j * E + e].act_scale == 0) == (host[j * E].act_scale == 0))
          << "expert " << e << " has another weight dtype (or 4-bit symmetry / group size, or W8A8) than expert 0";
    }
    CHECK(host[e].act_scale == host[E + e].act_scale)
        << "expert " << e << ": gate and up with different activation scales (W8A8 quantises their input once)";
    CHECK(experts[e].gate.w.shape()[0] == experts[0].gate.w.shape()[0] &&
          experts[e].gate.w.shape()[1] == experts[0].gate.w.shape()[1] &&
          experts[e].down.w.shape()[0] == experts[0].down.w.shape()[0])
        << "expert " << e << " has another shape than expert 0";
  }
  void* table = memory_.allocate(host.size() * sizeof(DevWeight));
  CUDA_CHECK(cudaMemcpyAsync(table, host.data(), host.size() * sizeof(DevWeight), cudaMemcpyHostToDevice,
                             as_stream(stream_)));
  synchronize();
  ExpertTable t{.d = static_cast<const DevWeight*>(table), .shared_gate_act = host[0].act_scale};
  for (size_t e = 0; e < E; ++e) {
    if (host[e].act_scale != t.shared_gate_act) t.shared_gate_act = 0.0f;
  }
  expert_tables_[experts.data()] = t;
  return t;
}

// Pairs (t, k) grouped per expert in row groups of G (8 when the experts see few rows each: the small-M kernel;
// else 64: the tile kernel); gate and up per group with the SiLU-gating, down scattered back to the pair's row times its
// gate; the K rows of a token summed, then the shared expert added (computed meanwhile on the side stream).
// Prompts only (at least kLtMinPairs pairs, groups of 64, outside a capture), with FP8 W8A8 experts (4-bit ones:
// routed_int4_experts_lt) and cuBLASLt on (unless QUATRE_CUDA_CUBLASLT=0): the grouping is read back (one
// synchronisation of the stream), then each expert's rows, a contiguous run of whole groups, go through cuBLASLt's
// FP8 GEMM, the experts spread over the LtGemm's lanes: the sorted rows quantised with their expert's scale, gate and
// up, the gating and the hidden quantised with the down's scale (one pass, profiled with down), down; moe()'s sum
// then gathers each pair's row and multiplies it by its gate. The same products as the grouped mma kernels up to
// summation order.
constexpr int64_t kLtMinPairs = 4096;

namespace {

struct ExpertRun {
  int64_t e, r0, rows;  // expert, first row, rows (whole groups)
};

// The grouping of a MoE read back (one synchronisation of the stream): each used expert's groups, contiguous and in
// expert order (moe_align), as one run of rows; `used` the rows up to the last used group.
std::vector<ExpertRun> expert_runs(const int32_t* group_expert, int64_t n_groups, int G, int64_t E, cudaStream_t s,
                                   int64_t& used) {
  std::vector<int32_t> expert_of(static_cast<size_t>(n_groups));
  CUDA_CHECK(cudaMemcpyAsync(expert_of.data(), group_expert, expert_of.size() * sizeof(int32_t),
                             cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<ExpertRun> runs;
  used = 0;
  for (int64_t g = 0; g < n_groups; ++g) {
    const int32_t e = expert_of[static_cast<size_t>(g)];
    if (e < 0) continue;
    CHECK(e < E) << "moe grouping: expert " << e << " of " << E;
    if (runs.empty() || runs.back().e != e || runs.back().r0 + runs.back().rows != g * G) runs.push_back({e, g * G, 0});
    runs.back().rows += G;
    used = (g + 1) * G;
  }
  return runs;
}

}  // namespace

bool CudaBackend::routed_experts_lt(const MoeArgs& args, int G, int64_t max_rows, const int32_t* sorted_token,
                                    const int32_t* sorted_pair, const int32_t* group_expert, float* gate, float* up,
                                    ExpertRows& result, Arena& a) {
  const int64_t T = args.x.dim(0), D = args.x.dim(1), K = args.routing.expert_ids.dim(1);
  const auto E = static_cast<int64_t>(args.experts.size());
  const int64_t F = args.experts[0].gate.w.dim(0);
  const cudaStream_t s = as_stream(stream_);
  if (T * K < kLtMinPairs || G != 64 || D % 16 != 0 || F % 16 != 0) return false;
  if (args.experts[0].gate.int4) {
    return routed_int4_experts_lt(args, G, max_rows, sorted_token, sorted_pair, group_expert, gate, up, result, a);
  }
  for (const FfnWeights& w : args.experts) {
    for (const Weight* m : {&w.gate, &w.up, &w.down}) {
      if (m->int4 || m->w.dtype() != DType::F8_E4M3 || !m->activation_scale) return false;
    }
  }
  if (!LtGemm::usable_on(s)) return false;
  if (lt_ == nullptr) lt_ = std::make_unique<LtGemm>();
  const int64_t n_groups = max_rows / G;
  int64_t used = 0;
  using Run = ExpertRun;
  const std::vector<Run> runs = expert_runs(group_expert, n_groups, G, E, s, used);
  std::vector<float> gu_scale(static_cast<size_t>(n_groups), 1.0f), down_scale(static_cast<size_t>(n_groups), 1.0f);
  for (const Run& r : runs) {
    for (int64_t g = r.r0 / G; g < (r.r0 + r.rows) / G; ++g) {
      gu_scale[static_cast<size_t>(g)] = *args.experts[static_cast<size_t>(r.e)].gate.activation_scale;
      down_scale[static_cast<size_t>(g)] = *args.experts[static_cast<size_t>(r.e)].down.activation_scale;
    }
  }
  for (const FfnWeights& w : args.experts) {  // 16-byte aligned weights (cudaMalloc's, in practice)
    for (const Weight* m : {&w.gate, &w.up, &w.down}) {
      if (reinterpret_cast<uintptr_t>(m->w.data()) % 16 != 0) return false;
    }
  }
  // Experts with as many rows share a shape: one pointer-array GEMM for all their gates and ups, one for their downs,
  // the sums unscaled (each expert's scales applied by the gating pass and the sum). Where this cuBLASLt has no
  // algorithm in that mode, or QUATRE_CUDA_LT_BATCHED=0, expert by expert with the scales as alpha; where it has none
  // for an expert's shape either, the grouped kernels take the whole MoE. Whole groups: an H100 measured the experts'
  // pairs rounded up to 16 rows instead slower (8K prompt, down 27.7 -> 30.7 ms; 1K prompt 52.9 -> 66.9 ms).
  std::map<int64_t, std::vector<size_t>> by_rows;  // rows -> runs
  for (size_t i = 0; i < runs.size(); ++i) by_rows[runs[i].rows].push_back(i);
  bool batched = lt_batched_enabled();
  for (const auto& [rows, of] : by_rows) {
    const int n = static_cast<int>(of.size());
    batched = batched && lt_->supports_batched(rows, F, D, F, 2 * n) && lt_->supports_batched(rows, D, F, D, n);
  }
  for (const Run& r : runs) {
    if (!batched && (!lt_->supports(r.rows, F, D, F) || !lt_->supports(r.rows, D, F, D))) return false;
  }
  auto* xq = static_cast<uint8_t*>(a.allocate(static_cast<size_t>(used * std::max(D, F)), 256));
  float* out = a.array<float>(static_cast<size_t>(used * D));
  // Each group's scales for the unscaled sums: gate's, up's and down's a · weight_scale.
  std::vector<float> sums_scale;
  std::vector<const void*> ptrs;  // the batches' pointer arrays: per shape, gate+up's w, x, y, then down's
  if (batched) {
    sums_scale.assign(static_cast<size_t>(3 * n_groups), 1.0f);
    for (const Run& r : runs) {
      const FfnWeights& w = args.experts[static_cast<size_t>(r.e)];
      for (int64_t g = r.r0 / G; g < (r.r0 + r.rows) / G; ++g) {
        sums_scale[static_cast<size_t>(g)] = dev(w.gate, "expert").scale;
        sums_scale[static_cast<size_t>(n_groups + g)] = dev(w.up, "expert").scale;
        sums_scale[static_cast<size_t>(2 * n_groups + g)] = dev(w.down, "expert").scale;
      }
    }
    for (const auto& [rows, of] : by_rows) {
      for (const Weight FfnWeights::*m : {&FfnWeights::gate, &FfnWeights::up}) {
        for (size_t i : of) ptrs.push_back((args.experts[static_cast<size_t>(runs[i].e)].*m).w.data());
      }
      for (int twice = 0; twice < 2; ++twice) {
        for (size_t i : of) ptrs.push_back(xq + runs[i].r0 * D);
      }
      for (float* y : {gate, up}) {
        for (size_t i : of) ptrs.push_back(y + runs[i].r0 * F);
      }
      for (size_t i : of) ptrs.push_back(args.experts[static_cast<size_t>(runs[i].e)].down.w.data());
      for (size_t i : of) ptrs.push_back(xq + runs[i].r0 * F);
      for (size_t i : of) ptrs.push_back(out + runs[i].r0 * D);
    }
  }
  reserve_uploads(2 * upload_span(gu_scale.size() * sizeof(float)) + upload_span(sums_scale.size() * sizeof(float)) +
                  upload_span(ptrs.size() * sizeof(void*)));
  const float* gu_scale_d = upload(std::span<const float>(gu_scale));
  const float* down_scale_d = upload(std::span<const float>(down_scale));
  const float* sums_scale_d = batched ? upload(std::span<const float>(sums_scale)) : nullptr;
  const auto* ptrs_d = batched ? upload(std::span<const void* const>(ptrs)) : nullptr;
  // An expert's GEMMs are small (a few hundred rows): they go round the lanes, so that several fill the card at once;
  // so do the batches of one shape.
  const auto over_lanes = [&](size_t count, const auto& each) { lt_->over_lanes(s, 0, count, each); };
  const auto gemm = [&](const uint8_t* x, const Run& r, int64_t N, int64_t Kd, const Weight& w, float* y,
                        cudaStream_t lane) {
    launched(lt_->fp8_gemm(x + r.r0 * Kd, r.rows, N, Kd, dev(w, "expert"), y + r.r0 * N, N, false, lane),
             "moe cublaslt");
  };
  // The batches, in ptrs order: a shape's gate+up arrays (w, x, y: 2n pointers each), then its down arrays (n each).
  struct Shape {
    int64_t rows;
    int n;                      // experts
    const void* const* arrays;  // its first pointer array on the device
  };
  std::vector<Shape> shapes;
  for (size_t at = 0; const auto& [rows, of] : by_rows) {
    shapes.push_back({rows, static_cast<int>(of.size()), batched ? ptrs_d + at : nullptr});
    at += 9 * of.size();
  }
  const auto batch = [&](const Shape& sh, bool down, cudaStream_t lane) {
    const int count = down ? sh.n : 2 * sh.n;
    const void* const* p = sh.arrays + (down ? 6 * sh.n : 0);  // w, then x at p + count, y at p + 2 count
    launched(down ? lt_->fp8_gemm_batched(p, p + count, p + 2 * count, count, sh.rows, D, F, D, lane)
                  : lt_->fp8_gemm_batched(p, p + count, p + 2 * count, count, sh.rows, F, D, F, lane),
             "moe cublaslt batched");
  };
  {
    const OpScope scope(profiler_, "moe gate+up+silu (routed)");
    launched(launch_quantize_fp8_rows(args.x.data_as<float>(), D, sorted_token, used, D, gu_scale_d, G, 0.0f, xq, s),
             "moe quantize");
    if (batched) {
      over_lanes(shapes.size(), [&](size_t k, cudaStream_t lane) { batch(shapes[k], false, lane); });
    } else {
      over_lanes(runs.size(), [&](size_t i, cudaStream_t lane) {
        const FfnWeights& w = args.experts[static_cast<size_t>(runs[i].e)];
        gemm(xq, runs[i], F, D, w.gate, gate, lane);
        gemm(xq, runs[i], F, D, w.up, up, lane);
      });
    }
  }
  const OpScope scope(profiler_, "moe down (routed)");
  launched(launch_silu_mul_quantize_fp8(gate, up, used, F, down_scale_d, G, xq, s, batched ? sums_scale_d : nullptr,
                                        batched ? sums_scale_d + n_groups : nullptr),
           "moe silu_mul quantize");
  if (batched) {
    over_lanes(shapes.size(), [&](size_t k, cudaStream_t lane) { batch(shapes[k], true, lane); });
  } else {
    over_lanes(runs.size(), [&](size_t i, cudaStream_t lane) {
      gemm(xq, runs[i], D, F, args.experts[static_cast<size_t>(runs[i].e)].down, out, lane);
    });
  }
  auto* row_of_pair = a.array<int32_t>(static_cast<size_t>(T * K));
  launched(launch_invert_rows(sorted_pair, used, row_of_pair, s), "moe invert rows");
  result = {.rows = out, .row_of_pair = row_of_pair, .row_scale = batched ? sums_scale_d + 2 * n_groups : nullptr, .G = G};
  return true;
}

// A prompt's 4-bit routed experts (routed_experts_lt's conditions, D and F multiples of 32; QUATRE_CUDA_LT_INT4=0
// keeps them on the grouped kernels, whose large-M path is a 64x64 fp32 tile): the grouping read back, the sorted
// rows rounded to BF16 once, then, in chunks of experts whose BF16 weights fit 512 MiB (int4_lt_chunk_experts), the
// chunk's gate, up and down dequantised to BF16 (one launch), each expert's gate and up through cuBLASLt's BF16 GEMM
// over the lanes, the gating rounded to BF16, the downs. Weights and inputs rounded to BF16 (relative 2^-9; the 4-bit
// codes' own error is ~2^-4 of a weight), fp32 sums: a prompt's numerics, as vLLM runs a 4-bit model in BF16, where
// decode keeps the exact fp32 sums of the mma kernels.
bool CudaBackend::routed_int4_experts_lt(const MoeArgs& args, int G, int64_t max_rows, const int32_t* sorted_token,
                                         const int32_t* sorted_pair, const int32_t* group_expert, float* gate,
                                         float* up, ExpertRows& result, Arena& a) {
  const int64_t D = args.x.dim(1), T = args.x.dim(0), K = args.routing.expert_ids.dim(1);
  const auto E = static_cast<int64_t>(args.experts.size());
  const int64_t F = args.experts[0].gate.w.dim(0);
  const cudaStream_t s = as_stream(stream_);
  if (!int4_lt_enabled() || D % 32 != 0 || F % 32 != 0 || !LtGemm::usable_on(s)) return false;
  // One 4-bit layout for gate, up and down (the dequantisation takes one; expert_table has checked that each matrix
  // has expert 0's layout), a group size the 16-byte pieces do not straddle, 16-byte aligned codes.
  const FfnWeights& w0 = args.experts[0];
  const DevWeight g0 = dev(w0.gate, "expert gate");
  if (g0.type != WType::kInt4 || g0.group_size % kInt4GroupMultiple != 0 || !same_layout(dev(w0.up, "expert up"), g0) ||
      !same_layout(dev(w0.down, "expert down"), g0)) {
    return false;
  }
  for (const FfnWeights& w : args.experts) {
    for (const Weight* m : {&w.gate, &w.up, &w.down}) {
      if (reinterpret_cast<uintptr_t>(m->w.data()) % 16 != 0) return false;
    }
  }
  const ExpertTable experts = expert_table(args.experts);
  if (lt_ == nullptr) lt_ = std::make_unique<LtGemm>();
  int64_t used = 0;
  const std::vector<ExpertRun> runs = expert_runs(group_expert, max_rows / G, G, E, s, used);
  for (const ExpertRun& r : runs) {
    if (!lt_->supports_bf16(r.rows, F, D, F) || !lt_->supports_bf16(r.rows, D, F, D)) return false;
  }
  std::vector<int32_t> ids;
  for (const ExpertRun& r : runs) ids.push_back(static_cast<int32_t>(r.e));
  reserve_uploads(upload_span(ids.size() * sizeof(int32_t)));
  const int32_t* ids_d = upload(std::span<const int32_t>(ids));
  const int64_t matrix = F * D;  // values of one expert's gate, up or down
  const auto chunk = static_cast<size_t>(int4_lt_chunk_experts(3 * matrix * 2));
  auto* xb = a.array<uint16_t>(static_cast<size_t>(used * D));
  auto* hb = a.array<uint16_t>(static_cast<size_t>(used * F));
  // Scratch for a whole chunk whatever the routing (the KV cache's sizing measures one prompt's footprint).
  auto* wb = a.array<uint16_t>(std::min(chunk, static_cast<size_t>(E)) * 3 * static_cast<size_t>(matrix));
  float* out = a.array<float>(static_cast<size_t>(used * D));
  const bool is_symmetric = g0.int4_offsets == nullptr;
  const auto gemm = [&](const uint16_t* x, const ExpertRun& r, int64_t N, int64_t Kd, const uint16_t* w, float* y,
                        cudaStream_t lane) {
    launched(lt_->bf16_gemm(x + r.r0 * Kd, r.rows, N, Kd, w, y + r.r0 * N, N, lane), "moe cublaslt bf16");
  };
  const OpScope scope(profiler_, "moe routed (4-bit, BF16 GEMMs)");
  launched(launch_bf16_rows(args.x.data_as<float>(), D, sorted_token, used, D, xb, s), "moe input bf16");
  for (size_t c0 = 0; c0 < runs.size(); c0 += chunk) {
    const size_t c1 = std::min(runs.size(), c0 + chunk);
    const auto w_of = [&](size_t i, int j) { return wb + (3 * (i - c0) + static_cast<size_t>(j)) * matrix; };
    launched(launch_dequant_int4_bf16(experts.d, E, ids_d + c0, static_cast<int>(c1 - c0), is_symmetric, F, D, wb, s),
             "moe dequant bf16");
    lt_->over_lanes(s, c0, c1, [&](size_t i, cudaStream_t lane) {
      gemm(xb, runs[i], F, D, w_of(i, 0), gate, lane);
      gemm(xb, runs[i], F, D, w_of(i, 1), up, lane);
    });
    const int64_t r0 = runs[c0].r0, r1 = runs[c1 - 1].r0 + runs[c1 - 1].rows;
    launched(launch_silu_mul_bf16(gate + r0 * F, up + r0 * F, r1 - r0, F, hb + r0 * F, s), "moe gating bf16");
    lt_->over_lanes(s, c0, c1, [&](size_t i, cudaStream_t lane) { gemm(hb, runs[i], D, F, w_of(i, 2), out, lane); });
  }
  auto* row_of_pair = a.array<int32_t>(static_cast<size_t>(T * K));
  launched(launch_invert_rows(sorted_pair, used, row_of_pair, s), "moe invert rows");
  result = {.rows = out, .row_of_pair = row_of_pair, .row_scale = nullptr, .G = G};
  return true;
}

Tensor CudaBackend::moe(const MoeArgs& args, Arena& a) {
  const Tensor& x = args.x;
  check_f32(x, "moe input");
  const int64_t T = x.dim(0), D = x.dim(1), K = args.routing.expert_ids.dim(1);
  const auto E = static_cast<int64_t>(args.experts.size());
  CHECK(E > 0) << "moe without experts";
  CHECK_SHAPE(args.routing.expert_ids, T, K);
  CHECK_SHAPE(args.routing.gates, T, K);
  CHECK(args.routing.expert_ids.device() == Device::kCuda) << "routing ids must be on the device";
  const ExpertTable experts = expert_table(args.experts);
  const DevWeight* table = experts.d;
  const int64_t F = args.experts[0].gate.w.dim(0);
  CHECK(weight_cols(args.experts[0].gate) == D && args.experts[0].down.w.dim(0) == D && weight_cols(args.experts[0].down) == F)
      << "expert weights " << args.experts[0].gate.w.shape_string() << " / " << args.experts[0].down.w.shape_string()
      << " for D=" << D;
  // 4-bit experts with int8 activations, where they take wide groups (QUATRE_CUDA_Q8_WIDE=1: 64 rows on 8 row blocks,
  // the codes read once a group), do so from QUATRE_CUDA_Q8_WIDE_FROM pairs an expert on average (read once: A/B
  // timing; 16 as other weights by default).
  // (The probe runs only where that knob moves the threshold.)
  static const int64_t q8_wide_from = std::max<int64_t>(1, env_int("QUATRE_CUDA_Q8_WIDE_FROM", 16));
  const auto q8_wide_experts = [&] {
    const MatmulProblem wide{.x = x.data_as<float>(), .ldx = D, .M = 64, .N = F, .K = D,
                             .weight = dev(args.experts[0].gate, "expert gate"), .experts = table, .rows_per_group = 64,
                             .rows_hint = 1.0f};
    return matmul_takes_q8(wide);
  };
  const PairGroups pg = pair_groups(T, K, E, q8_wide_from != 16 && q8_wide_experts() ? q8_wide_from : 16);
  const int G = pg.G;
  const int64_t max_rows = pg.max_rows;
  // The route's grouping when it made one for these experts (same layout size), else one made here.
  const bool is_grouped = args.routing.grouping.is_defined() && args.routing.grouping.numel() == pg.ints();
  int32_t* grouping = is_grouped ? args.routing.grouping.data_as<int32_t>() : a.array<int32_t>(static_cast<size_t>(pg.ints()));
  int32_t* sorted_token = grouping;
  int32_t* sorted_pair = grouping + max_rows;
  int32_t* group_expert = grouping + 2 * max_rows;
  const cudaStream_t s = as_stream(stream_);
  Tensor shared_out;  // [T,D]: the shared expert, beside the routed ones
  if (args.shared != nullptr) {
    BranchScope side(*this);  // closed on an exception too
    shared_out = ffn(x, *args.shared, a);
    side.end();
  }
  if (!is_grouped) {
    const OpScope scope(profiler_, "moe align");
    launched(launch_moe_align(args.routing.expert_ids.data_as<int32_t>(), T, K, E, G, max_rows, sorted_token,
                              sorted_pair, group_expert, s),
             "moe_align");
  }
  float* gate = a.array<float>(static_cast<size_t>(max_rows * F));
  float* up = a.array<float>(static_cast<size_t>(max_rows * F));
  const DevWeight gate0 = dev(args.experts[0].gate, "expert gate"), up0 = dev(args.experts[0].up, "expert up"),
                  down0 = dev(args.experts[0].down, "expert down");
  MatmulProblem p{.x = x.data_as<float>(), .ldx = D, .x_rows = sorted_token, .M = max_rows, .N = F, .K = D,
                  .weight = gate0, .experts = table, .group_expert = group_expert, .rows_per_group = G,
                  .y = gate, .ldy = F};
  // Real rows a group expected: the T*K pairs over the experts they can reach, at most G (the small tensor-core
  // kernel takes >= 1). One token: none, each of its groups is one row, which the staged kernel (or the FMA
  // kernel's one-row body) reads faster (H100, 16 FP8 layers, FMA kernel: batch 1 2.81 ms against 2.94 on the
  // tensor cores).
  // QUATRE_CUDA_ONE_ROW_HINT (an integer, read once, A/B timing) gives one token's groups that hint instead (1, with
  // QUATRE_CUDA_SMALL_TC_MIN_HINT_INT4=1 for the 4-bit experts the staged kernel takes: every expert of batch 1 on
  // the tensor cores).
  static const float one_row_hint = static_cast<float>(env_int("QUATRE_CUDA_ONE_ROW_HINT", 0));
  p.rows_hint = T == 1 ? one_row_hint
                       : std::min(static_cast<float>(T * K) / static_cast<float>(std::min(E, T * K)), static_cast<float>(G));
  CHECK(same_layout(up0, gate0)) << "expert gate and up weights of different dtypes (or 4-bit layouts)";
  p.weight2 = up0;  // one dtype for every expert's up weight (expert_table)
  p.experts2 = table + E;
  p.y2 = up;
  p.silu_gate = true;
  float* pair_out = nullptr;  // [T*K, D] each pair's output times its gate (the grouped kernels')
  ExpertRows lt;              // or the cuBLASLt path's rows, gathered and scaled by the sum
  // A prompt's 4-bit experts with int8 activations (QUATRE_CUDA_Q8_WIDE=1): groups of 64 rows on the small tensor-core
  // kernel's 8 row blocks (the codes read once a group, decoded in registers), x quantised in the grouping's row
  // order; not the BF16 GEMMs.
  const bool wide_q8 = G > 8 && matmul_takes_q8(p);
  if (wide_q8 || !routed_experts_lt(args, G, max_rows, sorted_token, sorted_pair, group_expert, gate, up, lt, a)) {
    pair_out = a.array<float>(static_cast<size_t>(T * K * D));
    // W8A8 inputs quantised once (the kernels would divide each load, once a 16-column tile): x when every gate and
    // up shares its scale, and the gated hidden where the gating runs after the products anyway (no launch more).
    const bool prequantize = gate0.act_scale > 0 && prequantize_enabled() && T >= 2;
    MatmulProblem q{.x = gate, .ldx = F, .M = max_rows, .N = D, .K = F, .weight = down0, .experts = table + 2 * E,
                    .group_expert = group_expert, .grouping_ready = true, .rows_per_group = G, .y = pair_out,
                    .ldy = D, .y_rows = sorted_pair, .row_scale = args.routing.gates.data_as<float>(),
                    .rows_hint = p.rows_hint};
    {
      const OpScope scope(profiler_, "moe gate+up+silu (routed)");
      if (prequantize && experts.shared_gate_act > 0) {
        float* xq = a.array<float>(static_cast<size_t>(T * D));
        launched(launch_quantize_act(p.x, D, T, D, experts.shared_gate_act, xq, s), "moe input quantisation");
        p.x = xq;
        p.x_quantized = true;
      }
      // 4-bit experts on the small tensor-core kernel: x, and the gated hidden (where the gating runs after the
      // products anyway: no launch more), made once: by default one plane, the values rounded to BF16 (the products
      // of the codes and BF16 activations); QUATRE_CUDA_INT4_ACT=fp32: their three BF16 terms (fp32 exactly).
      // QUATRE_CUDA_INT4_ACT=q8: quantised to int8 once instead (x_q8; where the kernel reads it: G % 128 == 0).
      const int planes = int4_bf16_activations() ? 1 : 3;
      const bool q8 = int4_q8_activations();
      struct Q8Plane {
        uint8_t* bytes;
        float* meta;
      };
      const auto q8_plane = [&](int64_t rows, int64_t width) {
        return Q8Plane{a.array<uint8_t>(static_cast<size_t>(rows * width)),
                       a.array<float>(static_cast<size_t>(2 * rows * (width / kQ8Block)))};
      };
      if (q8 && matmul_takes_q8(p)) {  // wide groups read it by their own rows: gathered through sorted_token
        const int64_t rows = wide_q8 ? max_rows : T;
        const Q8Plane x8 = q8_plane(rows, D);
        launched(launch_quantize_q8(p.x, D, rows, D, x8.bytes, x8.meta, s, wide_q8 ? sorted_token : nullptr),
                 "moe input q8");
        p.x_q8 = x8.bytes, p.x_q8_meta = x8.meta;
      } else if (matmul_takes_terms(p)) {
        auto* terms = a.array<uint16_t>(static_cast<size_t>(planes * T * D));
        launched(launch_split_terms(p.x, D, T, D, terms, planes, s), "moe input terms");
        p.x_terms = terms;
        p.x_term_planes = planes;
      }
      const bool gates_after = !matmul_gates_in_store(p);
      q.x_quantized = prequantize && gates_after;
      const bool hidden_q8 = !q.x_quantized && gates_after && q8 && matmul_takes_q8(q);
      const bool hidden_terms = !q.x_quantized && !hidden_q8 && gates_after && matmul_takes_terms(q);
      p.silu_gate = !q.x_quantized && !hidden_terms && !hidden_q8;
      launched(launch_matmul(p, s), "moe gate+up");
      if (q.x_quantized) {
        launched(launch_silu_mul_act_q(gate, up, max_rows, F, table + 2 * E, group_expert, G, s), "moe gating");
      } else if (hidden_q8) {
        const Q8Plane h8 = q8_plane(max_rows, F);
        launched(launch_silu_mul_q8(gate, up, max_rows, F, h8.bytes, h8.meta, s), "moe gating");
        q.x_q8 = h8.bytes, q.x_q8_meta = h8.meta;
      } else if (hidden_terms) {
        auto* terms = a.array<uint16_t>(static_cast<size_t>(planes * max_rows * F));
        launched(launch_silu_mul_terms(gate, up, max_rows, F, terms, planes, s), "moe gating");
        q.x_terms = terms;
        q.x_term_planes = planes;
      }
    }
    const OpScope scope(profiler_, "moe down (routed)");
    launched(launch_matmul(q, s), "moe down");
  }
  Tensor y = args.residual != nullptr ? *args.residual : a.tensor(DType::F32, {T, D});  // [T,D]
  if (args.residual != nullptr) {
    check_f32(y, "moe residual");
    CHECK_SHAPE(y, T, D);
  }
  join_branch();
  {
    const OpScope scope(profiler_, "moe sum");
    const float* plus = args.shared != nullptr ? shared_out.data_as<float>() : nullptr;
    launched(lt.rows != nullptr ? launch_sum_scaled_pairs(lt.rows, lt.row_of_pair, args.routing.gates.data_as<float>(),
                                                          T, K, D, plus, args.residual != nullptr, y.data_as<float>(), s,
                                                          lt.row_scale, lt.G)
                                : launch_sum_pairs(pair_out, T, K, D, plus, args.residual != nullptr, y.data_as<float>(), s),
             "moe sum");
  }
  return y;
}

}  // namespace quatre::cuda
