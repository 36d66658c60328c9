// The text decoder forward pass: one function per block, reading like MODEL.md §3 (= transformers
// Mistral4Model.forward). Depends on core, io; calls only core::Backend (and core::Communicator when sharded).
#include "model/text_model.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>

#include <fmt/format.h>

#include "core/error.h"

namespace quatre::model {

// q_a_layernorm and kv_a_layernorm are built with Mistral4RMSNorm's default eps, not rms_norm_eps (equal for every
// released config, MODEL.md §3.2).
constexpr float kLatentNormEps = 1e-6f;

// T tokens this step   D hidden   H query heads   R kv_lora_rank   Dn qk_nope_head_dim   Dr qk_rope_head_dim
// Dv v_head_dim   Q q_lora_rank   E routed experts   K experts per token   V vocabulary   N logit rows
// Sharded over P ranks (README, "Several GPUs"): Hl = H/P heads, El = E/P experts, Vl = V/P vocabulary rows.

AttentionOperands parse_attention_operands(std::string_view value, Device device) {
  if (value == "fp32") return AttentionOperands::kFp32;
  if (value == "bf16") return AttentionOperands::kBf16;
  if (value == "auto") return device == Device::kCuda ? AttentionOperands::kBf16 : AttentionOperands::kFp32;
  throw InvalidRequest(fmt::format("--attention-operands: expected auto, fp32 or bf16, got \"{}\"", value));
}

std::string activation_name(int layer, std::string_view name) {
  return layer < 0 ? std::string(name) : fmt::format("l{}.{}", layer, name);
}

TextModel::TextModel(const io::TextConfig& config, const TextWeights& weights, Backend& backend,
                     TextModelOptions options)
    : cfg_(config),
      weights_(weights),
      be_(backend),
      options_(options),
      comm_(weights.shard.is_sharded() ? options.comm : nullptr),
      dims_{.n_heads = weights.shard.count(config.n_heads),
            .kv_lora_rank = config.kv_lora_rank,
            .qk_nope_head_dim = config.qk_nope_head_dim,
            .qk_rope_head_dim = config.qk_rope_head_dim,
            .v_head_dim = config.v_head_dim},
      inv_freq_(rope_inv_freq(config)),
      softmax_scale_(model::softmax_scale(config, options.softmax_scale)),
      eps_(static_cast<float>(config.rms_norm_eps)),
      id_([] {
        static std::atomic<int64_t> next{1};
        return next.fetch_add(1, std::memory_order_relaxed);
      }()) {
  check_rope_supported(config);
  CHECK(static_cast<int64_t>(weights.layers.size()) == config.n_layers)
      << weights.layers.size() << " layers of weights for n_layers=" << config.n_layers;
  const int comm_rank = options.comm != nullptr ? options.comm->rank() : 0;
  const int comm_size = options.comm != nullptr ? options.comm->size() : 1;
  if (comm_rank != weights.shard.rank || comm_size != weights.shard.size) {
    throw LoadError(fmt::format("TextModel: weights of tensor-parallel rank {} of {} with a communicator of rank {} of {}",
                                weights.shard.rank, weights.shard.size, comm_rank, comm_size));
  }
}

Tensor TextModel::forward(const StepInputs& in, KvCache& kv, Arena& a, ActivationHook* hook) const {
  if (is_recordable(in, hook)) return forward_recorded(in, kv, a);
  if (options_.followers == nullptr) return forward_rank(in, kv, a, hook);
  options_.followers->begin_step(in, kv);  // ranks 1..N-1 run the same step on their threads
  Tensor logits;
  try {
    logits = forward_rank(in, kv, a, hook);
  } catch (...) {
    options_.followers->fail_step();
    throw;
  }
  options_.followers->end_step();
  return logits;
}

// Decode steps of up to this many sequences go through run_step (prefill chunks vary too much in shape to pay), on
// every backend alike: a device backend's replay then computes exactly what it computes without recording.
constexpr int64_t kMaxRecordedTokens = 512;

bool TextModel::is_recordable(const StepInputs& in, const ActivationHook* hook) const {
  const auto T = static_cast<int64_t>(in.token_ids.size());
  const int64_t width = in.attn.max_blocks_per_seq;
  return hook == nullptr && comm_ == nullptr && options_.followers == nullptr &&
         in.image_rows.empty() && T > 0 && T <= kMaxRecordedTokens && width > 0 &&
         static_cast<int64_t>(in.attn.block_tables.size()) == T * width;  // one token a sequence
}

// The step through Backend::run_step, keyed by everything that shapes its launches. The block tables are padded to
// a power-of-two width, so the key (and the attention's split of the keys, which follows the width) changes only
// when a sequence's table doubles, not with every block. A replay runs none of the ops' checks: they come first.
Tensor TextModel::forward_recorded(const StepInputs& in, KvCache& kv, Arena& a) const {
  check_step_inputs(in, cfg_.vocab_size, kv.n_blocks(), kv.block_size());
  const auto T = static_cast<int64_t>(in.token_ids.size());
  const int64_t width = in.attn.max_blocks_per_seq, padded = std::bit_ceil(static_cast<uint64_t>(width));
  padded_tables_.assign(static_cast<size_t>(T * padded), 0);  // padding entries: block 0, never read
  for (int64_t s = 0; s < T; ++s) {
    std::copy_n(in.attn.block_tables.begin() + s * width, width, padded_tables_.begin() + s * padded);
  }
  StepInputs p = in;
  p.attn.block_tables = padded_tables_;
  p.attn.max_blocks_per_seq = static_cast<int32_t>(padded);
  const Tensor cache = kv.layer(0);
  step_key_.assign({id_, T, padded, static_cast<int64_t>(in.logit_rows.size()),
                    static_cast<int64_t>(reinterpret_cast<uintptr_t>(cache.data())), kv.n_layers(), kv.n_blocks(),
                    kv.block_size(), static_cast<int64_t>(kv.dtype())});
  const std::span<const std::byte> inputs[] = {
      std::as_bytes(p.token_ids),          std::as_bytes(p.attn.positions),    std::as_bytes(p.attn.seq_index),
      std::as_bytes(p.attn.context_lens),  std::as_bytes(p.attn.slots),        std::as_bytes(p.attn.block_tables),
      std::as_bytes(p.logit_rows),         std::as_bytes(std::span(inv_freq_))};
  return be_.run_step({.key = step_key_, .inputs = inputs}, a, [&] { return forward_rank(p, kv, a, nullptr); });
}

// x = embed[ids]; x <- layer_l(x) for every l; logits = lm_head · RMSNorm(x[rows]).
Tensor TextModel::forward_rank(const StepInputs& in, KvCache& kv, Arena& a, ActivationHook* hook) const {
  Tensor x = be_.embed(in.token_ids, weights_.embed, a);                   // [T,D]
  if (!in.image_rows.empty()) be_.set_rows(x, in.image_rows, in.image_embeddings);  // x[img rows] = image features
  emit(hook, -1, "embed", x);
  const Arena::Mark residual = a.mark();                                   // x and the inputs live before it
  for (int l = 0; l < static_cast<int>(cfg_.n_layers); ++l) {
    layer(l, x, in, kv, a, hook);                                           // x updated in place
    emit(hook, l, "out", x);
    a.rewind(residual);  // the layer's scratch is free for the next one (one stream: its kernels ran first)
  }
  Tensor h = be_.rms_norm(x, weights_.final_norm, eps_, a);                // [T,D]
  emit(hook, -1, "final_norm", h);
  Tensor logits = be_.matmul(be_.gather_rows(h, in.logit_rows, a), weights_.lm_head, a);  // [N,V] (sharded: [N,Vl])
  if (comm_ != nullptr) {
    Tensor all = a.tensor(DType::F32, {logits.dim(0), cfg_.vocab_size});  // [N,V]: rank r's columns [r*Vl, (r+1)*Vl)
    comm_->all_gather_cols(logits, all);
    logits = all;
  }
  emit(hook, -1, "logits", logits);
  return logits;
}

// x <- x + Attn(RMSNorm(x));  x <- x + FFN(RMSNorm(x)), FFN = MoE or, for the first_k_dense_replace layers, dense.
void TextModel::layer(int l, Tensor x /*[T,D]*/, const StepInputs& in, KvCache& kv, Arena& a,
                      ActivationHook* hook) const {
  const LayerWeights& w = weights_.layers[static_cast<size_t>(l)];
  // Unsharded and unobserved, the residual adds happen in o_proj's and the MoE's last kernels (x is their output).
  const Tensor* residual = comm_ == nullptr && hook == nullptr ? &x : nullptr;
  Tensor h = be_.rms_norm(x, w.attn_norm, eps_, a);                        // [T,D]
  emit(hook, l, "attn_norm", h);
  const Tensor o = attention(l, w.attn, h, in, kv, a, hook, residual);     // o_proj(...) [T,D]
  if (residual == nullptr) be_.add_to(x, o);                                // x += o_proj(...)
  emit(hook, l, "attn_residual", x);
  Tensor u = be_.rms_norm(x, w.ffn_norm, eps_, a);                         // [T,D]
  emit(hook, l, "ffn_norm", u);
  if (w.moe && residual != nullptr) {
    moe(l, *w.moe, u, a, hook, residual);                                   // x += MoE(u)
    return;
  }
  Tensor y = w.moe ? moe(l, *w.moe, u, a, hook, nullptr) : be_.ffn(u, *w.dense, a);  // [T,D]
  reduce(y);                                                                // sharded: Σ of the ranks' partial FFNs
  emit(hook, l, "ffn", y);
  be_.add_to(x, y);
}

// MLA (MODEL.md §3.2-3.8). The cache keeps only c_kv [R] (after kv_a_layernorm) and k_rope [Dr] (after RoPE)
// per token; the backend's mla_attention expands them (naive) or absorbs kv_b into q and o (absorbed).
Tensor TextModel::attention(int l, const AttnWeights& w, const Tensor& h /*[T,D]*/, const StepInputs& in,
                            KvCache& kv, Arena& a, ActivationHook* hook, const Tensor* residual) const {
  const int64_t T = h.dim(0);
  BranchScope q_path(be_);                                                  // beside the kv path
  Tensor cq = be_.rms_norm(be_.matmul(h, w.q_a, a), w.q_a_norm, kLatentNormEps, a);  // [T,Q]
  Tensor q = be_.matmul(cq, w.q_b, a);                                      // [T, Hl*(Dn+Dr)]
  q_path.end();
  DCHECK_SHAPE(q, T, dims_.q_width());
  const RopeArgs rope_args{.inv_freq = inv_freq_,  // q also times the Llama-4 temperature
                            .positions = in.attn.positions,
                            .dims = dims_,
                            .llama4_beta = static_cast<float>(cfg_.rope.llama_4_scaling_beta),
                            .llama4_original_max_position_embeddings = cfg_.rope.llama_4_original_max_position_embeddings};
  Tensor kv_a = be_.matmul(h, w.kv_a, a);                                   // [T, R+Dr]
  be_.join_branch();
  if (hook == nullptr) {  // q roped; cache[slots] = [RMSNorm(kv_a[:, :R]) | RoPE(kv_a[:, R:])]: one pass where it can
    be_.rope_kv_write(q, kv.layer(l), kv_a, w.kv_a_norm, kLatentNormEps, rope_args, in.attn.slots, a);
  } else {                // the same, each part observed
    auto [c_raw, k_rope] = be_.split_cols(kv_a, cfg_.kv_lora_rank, a);      // [T,R], [T,Dr]
    Tensor c_kv = be_.rms_norm(c_raw, w.kv_a_norm, kLatentNormEps, a);      // [T,R]
    emit(hook, l, "attn.c_kv", c_kv);
    be_.rope(q, k_rope, rope_args);                                         // in place: the Dr slices
    emit(hook, l, "attn.q", q);
    emit(hook, l, "attn.k_rope", k_rope);
    be_.kv_write(kv.layer(l), c_kv, k_rope, in.attn.slots);
  }
  Tensor o = be_.mla_attention({.q = q,
                                .kv_cache = kv.layer(l),
                                .kv_b = w.kv_b,
                                .meta = &in.attn,
                                .dims = dims_,
                                .softmax_scale = softmax_scale_,
                                .form = options_.mla_form,
                                .bf16_operands = options_.attention_operands == AttentionOperands::kBf16},
                               a);                                          // [T, Hl*Dv]
  emit(hook, l, "attn.o", o);
  if (residual != nullptr) {  // unsharded: *residual += o_proj(o)
    be_.matmul_add(*residual, o, w.o, a);
    return *residual;
  }
  Tensor out = be_.matmul(o, w.o, a);                                       // [T,D] (sharded: this rank's heads' part)
  reduce(out);
  return out;
}

// y = Σ_k gate_k · Expert_{id_k}(u) + Shared(u)  (MODEL.md §3.10). Sharded: the rank's experts and its slice of the
// shared expert's width; every rank routes all tokens alike, and layer() sums the partial outputs.
Tensor TextModel::moe(int l, const MoeWeights& w, const Tensor& u /*[T,D]*/, Arena& a, ActivationHook* hook,
                      const Tensor* residual) const {
  Tensor router_logits = be_.matmul(u, w.router, a);                        // [T,E]
  emit(hook, l, "moe.router_logits", router_logits);
  Routing r = be_.route(router_logits, {.n_experts_per_tok = cfg_.n_experts_per_tok,
                                        .routed_scaling_factor = static_cast<float>(cfg_.routed_scaling_factor)},
                        a);                                                 // ids [T,K], gates [T,K]
  if (comm_ != nullptr) r = comm_->dispatch(r, weights_.experts, a);       // ids local to [0, El); others gate 0
  return be_.moe({.x = u, .routing = r, .experts = w.experts, .shared = w.shared ? &*w.shared : nullptr,
                  .residual = residual},
                 a);  // [T,D], or *residual += it
}

}  // namespace quatre::model
