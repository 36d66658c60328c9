// random_text_weights(): every tensor of TextWeights drawn on the device; the --dtype names and the stored bytes
// per parameter that go with them. Depends on model, backend/cuda.
#include "cli/random_weights.h"

#include <algorithm>
#include <vector>

#include <fmt/format.h>

#include "core/error.h"
#ifdef QUATRE_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace quatre::cli {

RandomDType parse_random_dtype(std::string_view name, std::string_view who) {
  if (name == "fp8") return RandomDType::kFp8;
  if (name == "bf16") return RandomDType::kBf16;
  if (name == "int4") return RandomDType::kInt4;
  throw InvalidRequest(fmt::format("{}: --dtype {} (expected {})", who, name, kRandomDTypeNames));
}

io::TextConfig random_weights_config(std::string_view preset, int64_t layers) {
  io::TextConfig text = io::preset(preset).text;
  if (layers > 0) {
    text.n_layers = layers;
    text.first_k_dense_replace = std::min(text.first_k_dense_replace, layers);
  }
  return text;
}

namespace {

// Codes (half a byte) and a BF16 scale per group, and an offset per group when asymmetric.
double int4_bytes(int64_t group_size, bool is_symmetric) {
  return 0.5 + (is_symmetric ? 2.0 : 4.0) / static_cast<double>(group_size);
}

}  // namespace

LinearBytes linear_bytes(RandomDType dtype) {
  switch (dtype) {
    case RandomDType::kFp8: return {.experts = 1, .other = 1};
    case RandomDType::kBf16: return {.experts = 2, .other = 2};
    case RandomDType::kInt4: return {.experts = int4_bytes(kRandomInt4GroupSize, true), .other = 1};
  }
  return {};
}

LinearBytes linear_bytes(const io::ModelConfig& config) {
  switch (config.quantization) {
    case io::WeightQuantization::kFp8PerTensor: return {.experts = 1, .other = 1};
    case io::WeightQuantization::kInt4: {
      const double b = int4_bytes(config.int4.group_size, config.int4.is_symmetric);
      return {.experts = b, .other = config.int4.modules == io::Int4Modules::kAll ? b : config.int4.others_fp8 ? 1.0 : 2.0};
    }
    case io::WeightQuantization::kNone: break;
  }
  return {.experts = 2, .other = 2};
}

#ifdef QUATRE_HAVE_CUDA
namespace {

constexpr float kStd = 0.02f;

// The static activation scale of every FP8 linear with --fp8-activations static: inputs up to ±8 (RMS-normed
// activations of std ~1) fit E4M3's ±448, as gen-model's synthetic checkpoints have it.
constexpr float kActivationScale = 8.0f / 448.0f;

class Draw {
 public:
  Draw(cuda::CudaBackend& be, RandomDType dtype, model::Fp8Activations fp8, uint64_t seed)
      : be_(be), dtype_(dtype), fp8_(fp8), seed_(seed) {}
  // Attention, shared and dense FFNs: FP8 or BF16 (FP8 next to 4-bit experts, as `quatre quantize` leaves those of
  // the FP8 release); FP8 ones with the static activation scale when asked (not kv_b: Fp8Activations).
  Weight linear(int64_t out, int64_t in) {
    Weight w = unscaled_linear(out, in);
    if (w.w.dtype() == DType::F8_E4M3 && fp8_ == model::Fp8Activations::kStatic) w.activation_scale = kActivationScale;
    return w;
  }
  Weight unscaled_linear(int64_t out, int64_t in) {  // kv_b, and the others' draw
    const DType t = dtype_ == RandomDType::kBf16 ? DType::BF16 : DType::F8_E4M3;
    return be_.random_weight(t, std::vector<int64_t>{out, in}, kStd, ++seed_);
  }
  Weight expert_linear(int64_t out, int64_t in) {
    if (dtype_ != RandomDType::kInt4) return linear(out, in);
    return be_.random_int4_weight(std::vector<int64_t>{out, in}, kRandomInt4GroupSize, kStd, ++seed_);
  }
  Weight bf16(int64_t out, int64_t in) { return be_.random_weight(DType::BF16, std::vector<int64_t>{out, in}, kStd, ++seed_); }
  Weight norm(int64_t n) { return be_.constant_weight(DType::BF16, std::vector<int64_t>{n}, 1.0f); }
  FfnWeights ffn(int64_t width, int64_t D) { return {linear(width, D), linear(width, D), linear(D, width)}; }
  FfnWeights expert(int64_t width, int64_t D) {
    return {expert_linear(width, D), expert_linear(width, D), expert_linear(D, width)};
  }

 private:
  cuda::CudaBackend& be_;
  RandomDType dtype_;
  model::Fp8Activations fp8_;
  uint64_t seed_;
};

}  // namespace

model::TextWeights random_text_weights(const io::TextConfig& t, Backend& backend, RandomDType dtype, uint64_t seed,
                                       model::Fp8Activations fp8) {
  auto* cuda = dynamic_cast<cuda::CudaBackend*>(&backend);
  if (cuda == nullptr) throw InvalidRequest("--random-weights needs the CUDA backend (--device cuda)");
  if (dtype == RandomDType::kInt4 &&
      (t.hidden_size % kRandomInt4GroupSize != 0 || t.moe_intermediate_size % kRandomInt4GroupSize != 0)) {
    throw InvalidRequest(fmt::format("--dtype int4 draws the routed experts in groups of {} columns, which must divide "
                                     "hidden_size ({}) and moe_intermediate_size ({})",
                                     kRandomInt4GroupSize, t.hidden_size, t.moe_intermediate_size));
  }
  Draw d(*cuda, dtype, fp8, seed);
  const int64_t D = t.hidden_size, H = t.n_heads, R = t.kv_lora_rank, Dr = t.qk_rope_head_dim;
  model::TextWeights w;
  w.embed = d.bf16(t.vocab_size, D);
  w.final_norm = d.norm(D);
  w.lm_head = t.tie_word_embeddings ? w.embed : d.bf16(t.vocab_size, D);
  for (int64_t l = 0; l < t.n_layers; ++l) {
    model::LayerWeights& layer = w.layers.emplace_back();
    layer.attn_norm = d.norm(D);
    layer.ffn_norm = d.norm(D);
    layer.attn = {.q_a = d.linear(t.q_lora_rank, D),
                  .q_a_norm = d.norm(t.q_lora_rank),
                  .q_b = d.linear(H * (t.qk_nope_head_dim + Dr), t.q_lora_rank),
                  .kv_a = d.linear(R + Dr, D),
                  .kv_a_norm = d.norm(R),
                  .kv_b = d.unscaled_linear(H * (t.qk_nope_head_dim + t.v_head_dim), R),
                  .o = d.linear(D, H * t.v_head_dim)};
    if (t.is_moe_layer(l)) {
      model::MoeWeights& moe = layer.moe.emplace();
      moe.router = d.bf16(t.n_routed_experts, D);
      for (int64_t e = 0; e < t.n_routed_experts; ++e) moe.experts.push_back(d.expert(t.moe_intermediate_size, D));
      if (t.n_shared_experts > 0) moe.shared = d.ffn(t.moe_intermediate_size * t.n_shared_experts, D);
    } else {
      layer.dense = d.ffn(t.intermediate_size, D);
    }
  }
  cuda->synchronize();
  return w;
}
vision::VisionWeights random_vision_weights(const io::VisionConfig& v, int64_t text_hidden, Backend& backend,
                                            uint64_t seed) {
  auto* cuda = dynamic_cast<cuda::CudaBackend*>(&backend);
  if (cuda == nullptr) throw InvalidRequest("--vision needs the CUDA backend (--device cuda)");
  Draw d(*cuda, RandomDType::kBf16, model::Fp8Activations::kNone, seed);
  const int64_t Hv = v.hidden_size, P = v.patch_size, MM = v.spatial_merge_size * v.spatial_merge_size;
  vision::VisionWeights w;
  w.patch_conv = d.bf16(Hv, 3 * P * P);
  w.ln_pre = d.norm(Hv);
  for (int64_t l = 0; l < v.n_layers; ++l) {
    w.layers.push_back({.attn_norm = d.norm(Hv), .ffn_norm = d.norm(Hv), .q = d.bf16(Hv, Hv), .k = d.bf16(Hv, Hv),
                        .v = d.bf16(Hv, Hv), .o = d.bf16(Hv, Hv),
                        .ffn = {d.bf16(v.intermediate_size, Hv), d.bf16(v.intermediate_size, Hv),
                                d.bf16(Hv, v.intermediate_size)}});
  }
  w.projector_norm = d.norm(Hv);
  w.merger = d.bf16(Hv, MM * Hv);
  w.linear_1 = d.bf16(text_hidden, Hv);
  w.linear_2 = d.bf16(text_hidden, text_hidden);
  cuda->synchronize();
  return w;
}
#else
model::TextWeights random_text_weights(const io::TextConfig&, Backend&, RandomDType, uint64_t, model::Fp8Activations) {
  throw InvalidRequest("--random-weights needs a CUDA build (QUATRE_CUDA=ON)");
}
vision::VisionWeights random_vision_weights(const io::VisionConfig&, int64_t, Backend&, uint64_t) {
  throw InvalidRequest("--vision needs a CUDA build (QUATRE_CUDA=ON)");
}
#endif

}  // namespace quatre::cli
