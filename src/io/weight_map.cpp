// The checkpoint-name table of both formats (MODEL.md §2.2, §2.4, §2.5) and the logical weight shapes.
#include "io/weight_map.h"

#include <algorithm>

#include <fmt/format.h>

#include "core/check.h"
#include "core/error.h"

namespace quatre::io {
namespace {

struct KindInfo {
  WeightKind kind;
  const char* name;  // activation-style suffix
  bool per_layer;
  bool per_expert;
  bool vision;       // part of the vision tower or projector
  bool fp8_eligible;
  const char* native;  // native name; {L} layer, {E} expert
  const char* hf;      // HF name after the text/vision prefix; {L} layer, {E} expert ("" when stacked)
};

// The table. HF names are relative to a prefix chosen by HfNaming: text names to the text model
// ("model." for the CausalLM, "language_model.model." for the legacy VLM...), vision names to the tower,
// projector names to the projector. Routed experts in HF are stacked (see expert_tensors below).
constexpr KindInfo kKinds[] = {
    {WeightKind::kEmbed, "embed", false, false, false, false, "tok_embeddings.weight", "embed_tokens.weight"},
    {WeightKind::kFinalNorm, "final_norm", false, false, false, false, "norm.weight", "norm.weight"},
    {WeightKind::kLmHead, "lm_head", false, false, false, false, "output.weight", "lm_head.weight"},
    {WeightKind::kAttnNorm, "attn_norm", true, false, false, false, "layers.{L}.attention_norm.weight", "layers.{L}.input_layernorm.weight"},
    {WeightKind::kFfnNorm, "ffn_norm", true, false, false, false, "layers.{L}.ffn_norm.weight", "layers.{L}.post_attention_layernorm.weight"},
    {WeightKind::kQA, "attn.q_a", true, false, false, true, "layers.{L}.attention.wq_a.weight", "layers.{L}.self_attn.q_a_proj.weight"},
    {WeightKind::kQANorm, "attn.q_a_norm", true, false, false, false, "layers.{L}.attention.q_a_norm.weight", "layers.{L}.self_attn.q_a_layernorm.weight"},
    {WeightKind::kQB, "attn.q_b", true, false, false, true, "layers.{L}.attention.wq_b.weight", "layers.{L}.self_attn.q_b_proj.weight"},
    {WeightKind::kKvA, "attn.kv_a", true, false, false, true, "layers.{L}.attention.wkv_a_with_mqa.weight", "layers.{L}.self_attn.kv_a_proj_with_mqa.weight"},
    {WeightKind::kKvANorm, "attn.kv_a_norm", true, false, false, false, "layers.{L}.attention.kv_a_norm.weight", "layers.{L}.self_attn.kv_a_layernorm.weight"},
    {WeightKind::kKvB, "attn.kv_b", true, false, false, true, "layers.{L}.attention.wkv_b.weight", "layers.{L}.self_attn.kv_b_proj.weight"},
    {WeightKind::kO, "attn.o", true, false, false, true, "layers.{L}.attention.wo.weight", "layers.{L}.self_attn.o_proj.weight"},
    {WeightKind::kRouter, "moe.router", true, false, false, false, "layers.{L}.gate.weight", "layers.{L}.mlp.gate.weight"},
    {WeightKind::kExpertGate, "gate", true, true, false, true, "layers.{L}.experts.{E}.w1.weight", ""},
    {WeightKind::kExpertUp, "up", true, true, false, true, "layers.{L}.experts.{E}.w3.weight", ""},
    {WeightKind::kExpertDown, "down", true, true, false, true, "layers.{L}.experts.{E}.w2.weight", ""},
    {WeightKind::kSharedGate, "shared.gate", true, false, false, true, "layers.{L}.shared_experts.w1.weight", "layers.{L}.mlp.shared_experts.gate_proj.weight"},
    {WeightKind::kSharedUp, "shared.up", true, false, false, true, "layers.{L}.shared_experts.w3.weight", "layers.{L}.mlp.shared_experts.up_proj.weight"},
    {WeightKind::kSharedDown, "shared.down", true, false, false, true, "layers.{L}.shared_experts.w2.weight", "layers.{L}.mlp.shared_experts.down_proj.weight"},
    {WeightKind::kDenseGate, "ffn.gate", true, false, false, true, "layers.{L}.feed_forward.w1.weight", "layers.{L}.mlp.gate_proj.weight"},
    {WeightKind::kDenseUp, "ffn.up", true, false, false, true, "layers.{L}.feed_forward.w3.weight", "layers.{L}.mlp.up_proj.weight"},
    {WeightKind::kDenseDown, "ffn.down", true, false, false, true, "layers.{L}.feed_forward.w2.weight", "layers.{L}.mlp.down_proj.weight"},
    {WeightKind::kVisionPatchConv, "patch_conv", false, false, true, false, "vision_encoder.patch_conv.weight", "patch_conv.weight"},
    {WeightKind::kVisionLnPre, "ln_pre", false, false, true, false, "vision_encoder.ln_pre.weight", "ln_pre.weight"},
    {WeightKind::kVisionAttnNorm, "attn_norm", true, false, true, false, "vision_encoder.transformer.layers.{L}.attention_norm.weight", "transformer.layers.{L}.attention_norm.weight"},
    {WeightKind::kVisionFfnNorm, "ffn_norm", true, false, true, false, "vision_encoder.transformer.layers.{L}.ffn_norm.weight", "transformer.layers.{L}.ffn_norm.weight"},
    {WeightKind::kVisionQ, "attn.q", true, false, true, false, "vision_encoder.transformer.layers.{L}.attention.wq.weight", "transformer.layers.{L}.attention.q_proj.weight"},
    {WeightKind::kVisionK, "attn.k", true, false, true, false, "vision_encoder.transformer.layers.{L}.attention.wk.weight", "transformer.layers.{L}.attention.k_proj.weight"},
    {WeightKind::kVisionV, "attn.v", true, false, true, false, "vision_encoder.transformer.layers.{L}.attention.wv.weight", "transformer.layers.{L}.attention.v_proj.weight"},
    {WeightKind::kVisionO, "attn.o", true, false, true, false, "vision_encoder.transformer.layers.{L}.attention.wo.weight", "transformer.layers.{L}.attention.o_proj.weight"},
    {WeightKind::kVisionGate, "ffn.gate", true, false, true, false, "vision_encoder.transformer.layers.{L}.feed_forward.w1.weight", "transformer.layers.{L}.feed_forward.gate_proj.weight"},
    {WeightKind::kVisionUp, "ffn.up", true, false, true, false, "vision_encoder.transformer.layers.{L}.feed_forward.w3.weight", "transformer.layers.{L}.feed_forward.up_proj.weight"},
    {WeightKind::kVisionDown, "ffn.down", true, false, true, false, "vision_encoder.transformer.layers.{L}.feed_forward.w2.weight", "transformer.layers.{L}.feed_forward.down_proj.weight"},
    {WeightKind::kProjectorNorm, "projector.norm", false, false, true, false, "pre_mm_projector_norm.weight", "norm.weight"},
    {WeightKind::kPatchMerger, "projector.patch_merger", false, false, true, false, "patch_merger.merging_layer.weight", "patch_merger.merging_layer.weight"},
    {WeightKind::kProjectorIn, "projector.linear_1", false, false, true, false, "vision_language_adapter.w_in.weight", "linear_1.weight"},
    {WeightKind::kProjectorOut, "projector.linear_2", false, false, true, false, "vision_language_adapter.w_out.weight", "linear_2.weight"},
};

const KindInfo& info(WeightKind kind) {
  for (const KindInfo& k : kKinds) {
    if (k.kind == kind) return k;
  }
  CHECK(false) << "WeightKind " << static_cast<int>(kind) << " missing from the table";
  return kKinds[0];
}

bool is_projector(WeightKind k) {
  return k == WeightKind::kProjectorNorm || k == WeightKind::kPatchMerger || k == WeightKind::kProjectorIn ||
         k == WeightKind::kProjectorOut;
}

std::string substitute(std::string pattern, const WeightKey& key) {
  auto replace = [&](std::string_view what, int value) {
    const size_t at = pattern.find(what);
    if (at != std::string::npos) pattern.replace(at, what.size(), std::to_string(value));
  };
  replace("{L}", key.layer);
  replace("{E}", key.expert);
  return pattern;
}

struct HfPrefixes {
  std::string text, lm_head, vision, projector;
};

HfPrefixes hf_prefixes(HfNaming naming) {
  switch (naming) {
    case HfNaming::kLegacyVlm:
      return {"language_model.model.", "language_model.", "vision_tower.", "multi_modal_projector."};
    case HfNaming::kModuleVlm:
      return {"model.language_model.", "", "model.vision_tower.", "model.multi_modal_projector."};
    case HfNaming::kCausalLm:
      return {"model.", "", "", ""};
  }
  return {};
}

std::string hf_name(const WeightKey& key, HfNaming naming) {
  const KindInfo& k = info(key.kind);
  const HfPrefixes p = hf_prefixes(naming);
  if (key.kind == WeightKind::kLmHead) return p.lm_head + k.hf;
  if (is_projector(key.kind)) return p.projector + substitute(k.hf, key);
  if (k.vision) return p.vision + substitute(k.hf, key);
  return p.text + substitute(k.hf, key);
}

// The name stem that FP8 scale tensors hang off: "x.weight" -> "x".
std::string stem(const std::string& weight_name) {
  constexpr std::string_view suffix = ".weight";
  if (weight_name.size() > suffix.size() && weight_name.ends_with(suffix)) {
    return weight_name.substr(0, weight_name.size() - suffix.size());
  }
  return weight_name;
}

void add_scales(std::vector<CheckpointTensor>& out, const CheckpointTensor& weight, const LayoutOptions& o,
                const std::vector<int64_t>& scale_shape, const std::string& weight_scale_name, const std::string& act_scale_name) {
  out.push_back({weight_scale_name, TensorRole::kWeightScale, scale_shape, weight.pieces, RowOrder::kNative});
  if (o.static_activation_scales) {
    // Activation scales have one element per expert in HF's stacked form ([E]), else a scalar.
    std::vector<int64_t> act_shape = scale_shape.empty() ? std::vector<int64_t>{} : std::vector<int64_t>{scale_shape[0]};
    out.push_back({act_scale_name, TensorRole::kActivationScale, act_shape, weight.pieces, RowOrder::kNative});
  }
}

// A 4-bit weight: the codes tensor's shape (last dimension halved) and, after it, its scales (and offsets).
void make_int4(std::vector<CheckpointTensor>& out, const ModelConfig& c, const std::string& scales_name,
               const std::string& offsets_name) {
  CheckpointTensor& w = out.back();
  std::vector<int64_t> groups = w.shape;
  groups.back() /= c.int4.group_size;
  w.shape.back() /= 2;
  const CheckpointTensor weight = w;
  out.push_back({scales_name, TensorRole::kInt4Scales, groups, weight.pieces, weight.row_order});
  if (!c.int4.is_symmetric) out.push_back({offsets_name, TensorRole::kInt4Offsets, groups, weight.pieces, weight.row_order});
}

}  // namespace

std::string weight_key_name(const WeightKey& key) {
  const KindInfo& k = info(key.kind);
  if (!k.per_layer) return is_projector(key.kind) || !k.vision ? k.name : fmt::format("vision.{}", k.name);
  const char layer_tag = k.vision ? 'v' : 'l';
  if (k.per_expert) return fmt::format("{}{}.experts.{}.{}", layer_tag, key.layer, key.expert, k.name);
  return fmt::format("{}{}.{}", layer_tag, key.layer, k.name);
}

bool may_be_fp8(WeightKind kind) { return info(kind).fp8_eligible; }

bool is_int4_weight(const ModelConfig& c, WeightKind kind) {
  if (c.quantization != WeightQuantization::kInt4) return false;
  const bool is_routed = kind == WeightKind::kExpertGate || kind == WeightKind::kExpertUp || kind == WeightKind::kExpertDown;
  return c.int4.modules == Int4Modules::kAll ? info(kind).fp8_eligible : is_routed;
}

std::vector<int64_t> weight_shape(const ModelConfig& c, const WeightKey& key) {
  const TextConfig& t = c.text;
  const int64_t H = t.hidden_size;
  switch (key.kind) {
    case WeightKind::kEmbed:
    case WeightKind::kLmHead: return {t.vocab_size, H};
    case WeightKind::kFinalNorm:
    case WeightKind::kAttnNorm:
    case WeightKind::kFfnNorm: return {H};
    case WeightKind::kQA: return {t.q_lora_rank, H};
    case WeightKind::kQANorm: return {t.q_lora_rank};
    case WeightKind::kQB: return {t.n_heads * t.qk_head_dim(), t.q_lora_rank};
    case WeightKind::kKvA: return {t.kv_lora_rank + t.qk_rope_head_dim, H};
    case WeightKind::kKvANorm: return {t.kv_lora_rank};
    case WeightKind::kKvB: return {t.n_heads * (t.qk_nope_head_dim + t.v_head_dim), t.kv_lora_rank};
    case WeightKind::kO: return {H, t.n_heads * t.v_head_dim};
    case WeightKind::kRouter: return {t.n_routed_experts, H};
    case WeightKind::kExpertGate:
    case WeightKind::kExpertUp:
    case WeightKind::kSharedGate:
    case WeightKind::kSharedUp: return {t.moe_intermediate_size, H};
    case WeightKind::kExpertDown:
    case WeightKind::kSharedDown: return {H, t.moe_intermediate_size};
    case WeightKind::kDenseGate:
    case WeightKind::kDenseUp: return {t.intermediate_size, H};
    case WeightKind::kDenseDown: return {H, t.intermediate_size};
    default: break;
  }
  CHECK(c.vision.has_value()) << "vision weight " << weight_key_name(key) << " in a text-only config";
  const VisionConfig& v = *c.vision;
  const int64_t Hv = v.hidden_size;
  switch (key.kind) {
    case WeightKind::kVisionPatchConv: return {Hv, v.num_channels, v.patch_size, v.patch_size};
    case WeightKind::kVisionLnPre:
    case WeightKind::kVisionAttnNorm:
    case WeightKind::kVisionFfnNorm:
    case WeightKind::kProjectorNorm: return {Hv};
    case WeightKind::kVisionQ:
    case WeightKind::kVisionK:
    case WeightKind::kVisionV:
    case WeightKind::kVisionO: return {Hv, Hv};
    case WeightKind::kVisionGate:
    case WeightKind::kVisionUp: return {v.intermediate_size, Hv};
    case WeightKind::kVisionDown: return {Hv, v.intermediate_size};
    case WeightKind::kPatchMerger: return {Hv, Hv * v.spatial_merge_size * v.spatial_merge_size};
    case WeightKind::kProjectorIn: return {H, Hv};
    case WeightKind::kProjectorOut: return {H, H};
    default: break;
  }
  CHECK(false) << "no shape for " << weight_key_name(key);
  return {};
}

std::vector<WeightKey> model_weights(const ModelConfig& c) {
  const TextConfig& t = c.text;
  std::vector<WeightKey> keys;
  keys.push_back({WeightKind::kEmbed});
  for (int32_t l = 0; l < t.n_layers; ++l) {
    for (WeightKind k : {WeightKind::kAttnNorm, WeightKind::kQA, WeightKind::kQANorm, WeightKind::kQB, WeightKind::kKvA,
                         WeightKind::kKvANorm, WeightKind::kKvB, WeightKind::kO, WeightKind::kFfnNorm}) {
      keys.push_back({k, l});
    }
    if (!t.is_moe_layer(l)) {
      for (WeightKind k : {WeightKind::kDenseGate, WeightKind::kDenseUp, WeightKind::kDenseDown}) keys.push_back({k, l});
      continue;
    }
    keys.push_back({WeightKind::kRouter, l});
    for (int32_t e = 0; e < t.n_routed_experts; ++e) {
      for (WeightKind k : {WeightKind::kExpertGate, WeightKind::kExpertUp, WeightKind::kExpertDown}) keys.push_back({k, l, e});
    }
    if (t.n_shared_experts > 0) {
      for (WeightKind k : {WeightKind::kSharedGate, WeightKind::kSharedUp, WeightKind::kSharedDown}) keys.push_back({k, l});
    }
  }
  keys.push_back({WeightKind::kFinalNorm});
  if (!t.tie_word_embeddings) keys.push_back({WeightKind::kLmHead});
  if (c.vision) {
    keys.push_back({WeightKind::kVisionPatchConv});
    keys.push_back({WeightKind::kVisionLnPre});
    for (int32_t l = 0; l < c.vision->n_layers; ++l) {
      for (WeightKind k : {WeightKind::kVisionAttnNorm, WeightKind::kVisionQ, WeightKind::kVisionK, WeightKind::kVisionV,
                           WeightKind::kVisionO, WeightKind::kVisionFfnNorm, WeightKind::kVisionGate, WeightKind::kVisionUp,
                           WeightKind::kVisionDown}) {
        keys.push_back({k, l});
      }
    }
    for (WeightKind k : {WeightKind::kProjectorNorm, WeightKind::kPatchMerger, WeightKind::kProjectorIn, WeightKind::kProjectorOut}) {
      keys.push_back({k});
    }
  }
  return keys;
}

std::vector<CheckpointTensor> checkpoint_layout(const ModelConfig& c, const LayoutOptions& o) {
  const bool native = o.format == CheckpointFormat::kMistralNative;
  const int64_t E = c.text.n_routed_experts, I = c.text.moe_intermediate_size, H = c.text.hidden_size;
  std::vector<CheckpointTensor> out;
  std::vector<int32_t> stacked_layers;  // HF layers whose experts are written as stacked tensors

  for (const WeightKey& key : model_weights(c)) {
    const KindInfo& k = info(key.kind);
    if (!native && k.per_expert) {
      if (key.expert == 0 && key.kind == WeightKind::kExpertGate) stacked_layers.push_back(key.layer);
      continue;
    }
    const std::vector<int64_t> shape = weight_shape(c, key);
    CheckpointTensor w;
    w.name = native ? substitute(k.native, key) : hf_name(key, o.hf_naming);
    w.shape = shape;
    w.pieces = {TensorPiece{key, -1, 0, shape[0]}};
    w.row_order = (!native && (key.kind == WeightKind::kVisionQ || key.kind == WeightKind::kVisionK)) ? RowOrder::kHfVisionQk
                                                                                                       : RowOrder::kNative;
    out.push_back(w);
    if (is_int4_weight(c, key.kind)) make_int4(out, c, stem(w.name) + ".scales", stem(w.name) + ".offsets");
    if (o.fp8 && k.fp8_eligible && !is_int4_weight(c, key.kind)) {
      const std::string s = stem(w.name);
      if (native) add_scales(out, w, o, {}, s + ".qscale_weight", s + ".qscale_act");
      else add_scales(out, w, o, {}, s + ".weight_scale_inv", s + ".activation_scale");
    }
    // HF: each MoE layer's stacked experts follow its router, in layer order.
    if (!native && key.kind == WeightKind::kRouter) {
      const int32_t l = key.layer;
      const std::string base = hf_prefixes(o.hf_naming).text + fmt::format("layers.{}.mlp.experts.", l);
      CheckpointTensor gate_up{base + "gate_up_proj", TensorRole::kWeight, {E, 2 * I, H}, {}, RowOrder::kNative};
      CheckpointTensor down{base + "down_proj", TensorRole::kWeight, {E, H, I}, {}, RowOrder::kNative};
      for (int32_t e = 0; e < E; ++e) {
        gate_up.pieces.push_back({{WeightKind::kExpertGate, l, e}, e, 0, I});
        gate_up.pieces.push_back({{WeightKind::kExpertUp, l, e}, e, I, I});
        down.pieces.push_back({{WeightKind::kExpertDown, l, e}, e, 0, H});
      }
      for (const CheckpointTensor* t : {&gate_up, &down}) {
        out.push_back(*t);
        if (is_int4_weight(c, WeightKind::kExpertGate)) make_int4(out, c, t->name + "_scales", t->name + "_offsets");
        // Weight scales: gate_up_proj_scale_inv [E,2,1] (gate, up) and down_proj_scale_inv [E,1,1], as
        // transformers 5.17 expects them; activation scales [E]. Readers also accept [E,1,1] for gate_up.
        const int64_t halves = t == &gate_up ? 2 : 1;
        if (o.fp8 && !is_int4_weight(c, WeightKind::kExpertGate)) {
          add_scales(out, *t, o, {E, halves, 1}, t->name + "_scale_inv", t->name + "_activation_scale");
        }
      }
    }
  }
  return out;
}

HfNaming detect_hf_naming(const std::vector<std::string>& names, std::string_view origin) {
  for (HfNaming n : {HfNaming::kLegacyVlm, HfNaming::kModuleVlm, HfNaming::kCausalLm}) {
    const std::string embed = hf_name({WeightKind::kEmbed}, n);
    if (std::find(names.begin(), names.end(), embed) != names.end()) return n;
  }
  throw LoadError(fmt::format("{}: no token embedding found (looked for language_model.model.embed_tokens.weight, "
                              "model.language_model.embed_tokens.weight and model.embed_tokens.weight)",
                              origin));
}

}  // namespace quatre::io
