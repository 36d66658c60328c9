// CpuBackend routing and experts (MODEL.md §3.10 = Mistral4TopkRouter, Mistral4Experts, Mistral4MLP): softmax over
// all experts, top-K, renormalised gates; tokens grouped per expert so each expert's weights are read once.
// Depends on core only.
#include <cmath>
#include <cstring>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/kernels.h"

namespace quatre::cpu {

// p = softmax(logits) over all E experts; ids = the K largest p, in descending order, ties to the lower index
// (torch.topk leaves ties unspecified); gates = p[ids] / (Σ p[ids] + 1e-20) · routed_scaling_factor.
Routing CpuBackend::route(const Tensor& logits, const RouteArgs& args, Arena& a) {
  const int64_t T = logits.dim(0), E = logits.dim(1), K = args.n_experts_per_tok;
  CHECK(K >= 1 && K <= E) << "top-" << K << " of " << E << " experts";
  Routing r{.expert_ids = a.tensor(DType::I32, {T, K}), .gates = a.tensor(DType::F32, {T, K})};
  float* p = a.array<float>(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t) {
    std::memcpy(p, logits.data_as<float>() + t * E, static_cast<size_t>(E) * 4);
    softmax_inplace(p, E);
    int32_t* ids = r.expert_ids.data_as<int32_t>() + t * K;
    float* gates = r.gates.data_as<float>() + t * K;
    float sum = 0;
    for (int64_t k = 0; k < K; ++k) {
      int32_t best = -1;
      for (int32_t e = 0; e < E; ++e) {
        bool taken = false;
        for (int64_t j = 0; j < k; ++j) taken = taken || ids[j] == e;
        if (!taken && (best < 0 || p[e] > p[best])) best = e;
      }
      ids[k] = best;
      gates[k] = p[best];
      sum += p[best];
    }
    const float denominator = sum + 1e-20f;
    for (int64_t k = 0; k < K; ++k) gates[k] = gates[k] / denominator * args.routed_scaling_factor;
  }
  return r;
}

// down(silu(gate·x) ⊙ up·x)
Tensor CpuBackend::ffn(const Tensor& x, const FfnWeights& w, Arena& a) {
  const int64_t M = x.dim(0);
  Tensor g = matmul(x, w.gate, a);  // [M,F]
  Tensor u = matmul(x, w.up, a);    // [M,F]
  float* gp = g.data_as<float>();
  const float* up = u.data_as<float>();
  for (int64_t i = 0; i < g.numel(); ++i) gp[i] = silu(gp[i]) * up[i];
  Tensor y = matmul(g, w.down, a);  // [M,D]
  CHECK_SHAPE(y, M, x.dim(1));
  return y;
}

// y = Σ_k gate_k · Expert_{id_k}(x) + Shared(x). Like transformers' eager loop, experts run in ascending index
// order and each adds gate · its output to the token's row, so a row accumulates in expert-index order.
Tensor CpuBackend::moe(const MoeArgs& args, Arena& a) {
  const Tensor& x = args.x;
  const int64_t T = x.dim(0), D = x.dim(1), K = args.routing.expert_ids.dim(1);
  const auto E = static_cast<int64_t>(args.experts.size());
  CHECK_SHAPE(args.routing.expert_ids, T, K);
  Tensor y = a.tensor(DType::F32, {T, D});  // [T,D]
  fill(y, 0.0f);
  // Counting sort of the (token, k) pairs by expert.
  int32_t* begin = a.array<int32_t>(static_cast<size_t>(E + 1));
  std::fill(begin, begin + E + 1, 0);
  const int32_t* ids = args.routing.expert_ids.data_as<int32_t>();
  for (int64_t i = 0; i < T * K; ++i) {
    CHECK(ids[i] >= 0 && ids[i] < E) << "expert id " << ids[i] << " of " << E;
    ++begin[ids[i] + 1];
  }
  for (int64_t e = 0; e < E; ++e) begin[e + 1] += begin[e];
  int32_t* next = a.array<int32_t>(static_cast<size_t>(E));
  std::copy(begin, begin + E, next);
  int32_t* pairs = a.array<int32_t>(static_cast<size_t>(T * K));  // t*K + k, grouped by expert, tokens ascending
  for (int64_t i = 0; i < T * K; ++i) pairs[next[ids[i]]++] = static_cast<int32_t>(i);

  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = begin[e + 1] - begin[e];
    if (n == 0) continue;
    Tensor xe = a.tensor(DType::F32, {n, D});  // [n_e, D]
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = pairs[begin[e] + i] / K;
      std::memcpy(xe.data_as<float>() + i * D, x.data_as<float>() + t * D, static_cast<size_t>(D) * 4);
    }
    Tensor ye = ffn(xe, args.experts[static_cast<size_t>(e)], a);  // [n_e, D]
    for (int64_t i = 0; i < n; ++i) {
      const int32_t pair = pairs[begin[e] + i];
      const float gate = args.routing.gates.data_as<float>()[pair];
      float* row = y.data_as<float>() + (pair / K) * D;
      const float* out = ye.data_as<float>() + i * D;
      for (int64_t j = 0; j < D; ++j) row[j] += out[j] * gate;
    }
  }
  if (args.shared != nullptr) add_to(y, ffn(x, *args.shared, a));
  if (args.residual == nullptr) return y;
  add_to(*args.residual, y);
  return *args.residual;
}

}  // namespace quatre::cpu
