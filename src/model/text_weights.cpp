// Checkpoint WeightViews -> Backend Weights for the text decoder. Depends on core, io.
#include "model/text_weights.h"

namespace quatre::model {
namespace {

using io::WeightKind;

class Loader {
 public:
  Loader(const io::Checkpoint& checkpoint, Backend& backend) : checkpoint_(checkpoint), backend_(backend) {}

  Weight operator()(WeightKind kind, int layer = -1, int expert = -1) const {
    const io::WeightView& v = checkpoint_.weight({kind, layer, expert});
    Weight stored;
    // Weights are never written: the const_cast only fits the view type shared with activations.
    stored.w = Tensor(const_cast<std::byte*>(v.bytes.data()), v.dtype, v.shape, Device::kCpu);
    CHECK(stored.w.bytes() == v.bytes.size()) << v.source << ": " << v.bytes.size() << " bytes for shape "
                                              << stored.w.shape_string();
    stored.weight_scale = v.weight_scale;
    stored.activation_scale = v.activation_scale;
    return backend_.prepare_weight(stored);
  }

  FfnWeights ffn(WeightKind gate, WeightKind up, WeightKind down, int layer, int expert = -1) const {
    return {(*this)(gate, layer, expert), (*this)(up, layer, expert), (*this)(down, layer, expert)};
  }

 private:
  const io::Checkpoint& checkpoint_;
  Backend& backend_;
};

}  // namespace

TextWeights TextWeights::load(const io::Checkpoint& checkpoint, Backend& backend) {
  const io::TextConfig& t = checkpoint.config().text;
  const Loader w(checkpoint, backend);
  TextWeights out;
  out.embed = w(WeightKind::kEmbed);
  out.final_norm = w(WeightKind::kFinalNorm);
  out.lm_head = t.tie_word_embeddings ? out.embed : w(WeightKind::kLmHead);
  for (int l = 0; l < static_cast<int>(t.n_layers); ++l) {
    LayerWeights& layer = out.layers.emplace_back();
    layer.attn_norm = w(WeightKind::kAttnNorm, l);
    layer.ffn_norm = w(WeightKind::kFfnNorm, l);
    layer.attn = {.q_a = w(WeightKind::kQA, l),
                  .q_a_norm = w(WeightKind::kQANorm, l),
                  .q_b = w(WeightKind::kQB, l),
                  .kv_a = w(WeightKind::kKvA, l),
                  .kv_a_norm = w(WeightKind::kKvANorm, l),
                  .kv_b = w(WeightKind::kKvB, l),
                  .o = w(WeightKind::kO, l)};
    if (t.is_moe_layer(l)) {
      MoeWeights& moe = layer.moe.emplace();
      moe.router = w(WeightKind::kRouter, l);
      for (int e = 0; e < static_cast<int>(t.n_routed_experts); ++e) {
        moe.experts.push_back(w.ffn(WeightKind::kExpertGate, WeightKind::kExpertUp, WeightKind::kExpertDown, l, e));
      }
      if (t.n_shared_experts > 0) {
        moe.shared = w.ffn(WeightKind::kSharedGate, WeightKind::kSharedUp, WeightKind::kSharedDown, l);
      }
    } else {
      layer.dense = w.ffn(WeightKind::kDenseGate, WeightKind::kDenseUp, WeightKind::kDenseDown, l);
    }
  }
  return out;
}

}  // namespace quatre::model
