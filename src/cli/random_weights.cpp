// random_text_weights(): every tensor of TextWeights drawn on the device. Depends on model, backend/cuda.
#include "cli/random_weights.h"

#include <vector>

#include "core/error.h"
#ifdef QUATRE_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace quatre::cli {

#ifdef QUATRE_HAVE_CUDA
namespace {

constexpr float kStd = 0.02f;

class Draw {
 public:
  Draw(cuda::CudaBackend& be, bool fp8, uint64_t seed) : be_(be), linear_(fp8 ? DType::F8_E4M3 : DType::BF16), seed_(seed) {}
  Weight linear(int64_t out, int64_t in) { return be_.random_weight(linear_, std::vector<int64_t>{out, in}, kStd, ++seed_); }
  Weight bf16(int64_t out, int64_t in) { return be_.random_weight(DType::BF16, std::vector<int64_t>{out, in}, kStd, ++seed_); }
  Weight norm(int64_t n) { return be_.constant_weight(DType::BF16, std::vector<int64_t>{n}, 1.0f); }
  FfnWeights ffn(int64_t width, int64_t D) { return {linear(width, D), linear(width, D), linear(D, width)}; }

 private:
  cuda::CudaBackend& be_;
  DType linear_;
  uint64_t seed_;
};

}  // namespace

model::TextWeights random_text_weights(const io::TextConfig& t, Backend& backend, bool fp8, uint64_t seed) {
  auto* cuda = dynamic_cast<cuda::CudaBackend*>(&backend);
  if (cuda == nullptr) throw InvalidRequest("--random-weights needs the CUDA backend (--device cuda)");
  Draw d(*cuda, fp8, seed);
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
                  .kv_b = d.linear(H * (t.qk_nope_head_dim + t.v_head_dim), R),
                  .o = d.linear(D, H * t.v_head_dim)};
    if (t.is_moe_layer(l)) {
      model::MoeWeights& moe = layer.moe.emplace();
      moe.router = d.bf16(t.n_routed_experts, D);
      for (int64_t e = 0; e < t.n_routed_experts; ++e) moe.experts.push_back(d.ffn(t.moe_intermediate_size, D));
      if (t.n_shared_experts > 0) moe.shared = d.ffn(t.moe_intermediate_size * t.n_shared_experts, D);
    } else {
      layer.dense = d.ffn(t.intermediate_size, D);
    }
  }
  cuda->synchronize();
  return w;
}
#else
model::TextWeights random_text_weights(const io::TextConfig&, Backend&, bool, uint64_t) {
  throw InvalidRequest("--random-weights needs a CUDA build (QUATRE_CUDA=ON)");
}
#endif

}  // namespace quatre::cli
