// ModelConfig from and to config.json / params.json, validation, presets and parameter counts.
#include "io/model_config.h"

#include <cmath>
#include <functional>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "core/error.h"
#include "io/json_fields.h"

namespace quatre::io {
namespace {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

// The real release's values (MODEL.md §1.1, §1.2), also the defaults for keys a config.json leaves out.
TextConfig mistral_small_4_text() {
  TextConfig t;
  t.vocab_size = 131072;
  t.hidden_size = 4096;
  t.n_layers = 36;
  t.n_heads = 32;
  t.q_lora_rank = 1024;
  t.kv_lora_rank = 256;
  t.qk_nope_head_dim = 64;
  t.qk_rope_head_dim = 64;
  t.v_head_dim = 128;
  t.n_routed_experts = 128;
  t.n_experts_per_tok = 4;
  t.n_shared_experts = 1;
  t.moe_intermediate_size = 2048;
  t.intermediate_size = 12288;
  t.first_k_dense_replace = 0;
  t.routed_scaling_factor = 1.0;
  t.rms_norm_eps = 1e-6;
  t.max_position_embeddings = 1048576;
  t.rope = {.theta = 10000.0,
            .is_yarn = true,
            .factor = 128.0,
            .original_max_position_embeddings = 8192,
            .beta_fast = 32.0,
            .beta_slow = 1.0,
            .mscale = 1.0,
            .mscale_all_dim = 1.0,
            .apply_scale = std::nullopt,
            .llama_4_scaling_beta = 0.1,
            .llama_4_original_max_position_embeddings = 8192};
  return t;
}

VisionConfig mistral_small_4_vision() {
  return VisionConfig{.hidden_size = 1024,
                      .intermediate_size = 4096,
                      .n_layers = 24,
                      .n_heads = 16,
                      .head_dim = 64,
                      .num_channels = 3,
                      .image_size = 1540,
                      .patch_size = 14,
                      .rope_theta = 10000.0,
                      .spatial_merge_size = 2};
}

// qk_nope_head_dim + qk_rope_head_dim of a config not validated yet: in double, so absurd values from a
// file cannot overflow before validate() refuses them.
double unvalidated_qk_head_dim(const TextConfig& t) {
  return static_cast<double>(t.qk_nope_head_dim) + static_cast<double>(t.qk_rope_head_dim);
}

// Keys shared by the HF text config of both architectures.
TextConfig parse_hf_text(const JsonFields& c) {
  const TextConfig d = mistral_small_4_text();
  TextConfig t;
  t.vocab_size = c.integer_or("vocab_size", d.vocab_size);
  t.hidden_size = c.integer_or("hidden_size", d.hidden_size);
  t.n_layers = c.integer_or("num_hidden_layers", d.n_layers);
  t.n_heads = c.integer_or("num_attention_heads", d.n_heads);
  t.q_lora_rank = c.integer_or("q_lora_rank", d.q_lora_rank);
  if (c.json().contains("q_lora_rank") && c.json()["q_lora_rank"].is_null()) {
    c.fail("q_lora_rank", "is null (a direct q_proj); Mistral Small 4 has a q LoRA");
  }
  t.kv_lora_rank = c.integer_or("kv_lora_rank", d.kv_lora_rank);
  t.qk_nope_head_dim = c.integer_or("qk_nope_head_dim", d.qk_nope_head_dim);
  t.qk_rope_head_dim = c.integer_or("qk_rope_head_dim", d.qk_rope_head_dim);
  t.v_head_dim = c.integer_or("v_head_dim", d.v_head_dim);
  t.n_routed_experts = c.integer_or("n_routed_experts", d.n_routed_experts);
  t.n_experts_per_tok = c.integer_or("num_experts_per_tok", d.n_experts_per_tok);
  t.n_shared_experts = c.integer_or("n_shared_experts", d.n_shared_experts);
  t.moe_intermediate_size = c.integer_or("moe_intermediate_size", d.moe_intermediate_size);
  t.intermediate_size = c.integer_or("intermediate_size", d.intermediate_size);
  t.first_k_dense_replace = c.integer_or("first_k_dense_replace", d.first_k_dense_replace);
  t.routed_scaling_factor = c.number_or("routed_scaling_factor", d.routed_scaling_factor);
  t.rms_norm_eps = c.number_or("rms_norm_eps", d.rms_norm_eps);
  t.max_position_embeddings = c.integer_or("max_position_embeddings", d.max_position_embeddings);
  t.tie_word_embeddings = c.boolean_or("tie_word_embeddings", false);
  t.bos_token_id = c.integer_or("bos_token_id", d.bos_token_id);
  t.eos_token_id = c.integer_or("eos_token_id", d.eos_token_id);
  t.pad_token_id = c.integer_or("pad_token_id", d.pad_token_id);
  if (c.has("head_dim") && static_cast<double>(c.integer("head_dim")) != unvalidated_qk_head_dim(t)) {
    c.fail("head_dim", fmt::format("is {}, expected qk_nope_head_dim + qk_rope_head_dim = {}", c.integer("head_dim"),
                                   unvalidated_qk_head_dim(t)));
  }

  // Variants of the DeepSeek-style block that no Mistral Small 4 checkpoint uses.
  c.require_integer_if_present("n_group", 1, "group-limited routing is not part of Mistral Small 4");
  c.require_integer_if_present("topk_group", 1, "group-limited routing is not part of Mistral Small 4");
  c.require_integer_if_present("moe_layer_freq", 1, "every layer after first_k_dense_replace is MoE");
  c.require_bool_if_present("norm_topk_prob", true, "the router renormalises the top-k weights");
  c.require_bool_if_present("attention_bias", false, "Mistral Small 4 has no attention biases");
  c.require_bool_if_present("rope_interleave", true, "the text RoPE is interleaved (MODEL.md §0.2)");
  c.require_string_if_present("hidden_act", "silu", "the experts are SiLU-gated");
  c.require_string_if_present("scoring_func", "softmax", "the router is a softmax over all experts");

  // Rope: "rope_parameters" (transformers >= 5) or the legacy "rope_scaling" + "rope_theta".
  std::optional<JsonFields> rp = c.object_if("rope_parameters");
  if (!rp) rp = c.object_if("rope_scaling");
  RopeConfig& r = t.rope;
  r.theta = rp && rp->has("rope_theta") ? rp->number("rope_theta") : c.number_or("rope_theta", d.rope.theta);
  const std::string type = rp ? rp->string_or("rope_type", rp->string_or("type", "default")) : "default";
  if (type == "yarn") {
    r.is_yarn = true;
    r.factor = rp->number("factor");
    r.original_max_position_embeddings = rp->integer("original_max_position_embeddings");
    r.beta_fast = rp->number_or("beta_fast", 32.0);
    r.beta_slow = rp->number_or("beta_slow", 1.0);
    r.mscale = rp->number_or("mscale", 1.0);
    r.mscale_all_dim = rp->number_or("mscale_all_dim", 0.0);
    if (rp->has("attention_factor") && rp->number("attention_factor") != 1.0) {
      rp->fail("attention_factor", "only 1.0 is supported (cos/sin are unscaled in Mistral Small 4, MODEL.md §4.2)");
    }
    rp->require_bool_if_present("truncate", true, "YaRN correction bounds are floored/ceiled");
  } else if (type != "default") {
    rp->fail("rope_type", fmt::format("is \"{}\", expected \"yarn\" or \"default\"", type));
  }
  if (rp && rp->has("partial_rotary_factor")) {
    const double expected = static_cast<double>(t.qk_rope_head_dim) / unvalidated_qk_head_dim(t);
    if (std::abs(rp->number("partial_rotary_factor") - expected) > 1e-9) {
      rp->fail("partial_rotary_factor", fmt::format("is {}, expected qk_rope_head_dim / head_dim = {}",
                                                    rp->number("partial_rotary_factor"), expected));
    }
  }
  r.llama_4_scaling_beta = rp ? rp->number_or("llama_4_scaling_beta", 0.0) : 0.0;
  // transformers reuses the YaRN original context for the Llama-4 temperature (MODEL.md §1.1).
  r.llama_4_original_max_position_embeddings = r.original_max_position_embeddings;
  if (r.llama_4_scaling_beta != 0.0 && r.original_max_position_embeddings <= 0) {
    rp->fail("llama_4_scaling_beta", "needs original_max_position_embeddings for its step length");
  }
  return t;
}

// quatre's own 4-bit format ("quant_method": "quatre_int4", written by `quatre quantize`).
void parse_int4_quantization(const JsonFields& q, ModelConfig& m) {
  q.require_integer_if_present("bits", 4, "quatre_int4 stores 4-bit codes");
  m.int4.group_size = q.integer("group_size");
  m.int4.is_symmetric = q.boolean_or("symmetric", true);
  const std::string modules = q.string_or("modules", "experts");
  if (modules == "experts") {
    m.int4.modules = Int4Modules::kExperts;
  } else if (modules == "all") {
    m.int4.modules = Int4Modules::kAll;
  } else {
    q.fail("modules", fmt::format("is \"{}\", expected \"experts\" or \"all\"", modules));
  }
  q.require_string_if_present("scale_dtype", "bfloat16", "quatre_int4 scales are BF16");
  const std::string others = q.string_or("other_linears", "bfloat16");
  if (others != "bfloat16" && others != "float8_e4m3fn") {
    q.fail("other_linears", fmt::format("is \"{}\", expected \"bfloat16\" or \"float8_e4m3fn\"", others));
  }
  m.int4.others_fp8 = others == "float8_e4m3fn";
  const std::string scheme = q.string_or("activation_scheme", "static");
  if (scheme != "static" && scheme != "dynamic") {
    q.fail("activation_scheme", fmt::format("is \"{}\", expected \"static\" or \"dynamic\"", scheme));
  }
  m.static_activation_scales = scheme == "static";
  m.quantization = WeightQuantization::kInt4;
}

void parse_hf_quantization(const JsonFields& c, ModelConfig& m) {
  const std::optional<JsonFields> q = c.object_if("quantization_config");
  if (!q) return;
  const std::string method = q->string("quant_method");
  if (method == "quatre_int4") {
    parse_int4_quantization(*q, m);
    return;
  }
  if (method != "fp8") {
    q->fail("quant_method", fmt::format("is \"{}\", only \"fp8\" (per-tensor E4M3) and \"quatre_int4\" are supported", method));
  }
  if (q->has("weight_block_size")) {
    q->fail("weight_block_size", "block-wise FP8 is not supported; the release uses per-tensor scales (null)");
  }
  const std::string scheme = q->string_or("activation_scheme", "static");
  if (scheme != "static" && scheme != "dynamic") {
    q->fail("activation_scheme", fmt::format("is \"{}\", expected \"static\" or \"dynamic\"", scheme));
  }
  m.quantization = WeightQuantization::kFp8PerTensor;
  m.static_activation_scales = scheme == "static";
}

VisionConfig parse_hf_vision(const JsonFields& top, const JsonFields& v, double text_eps) {
  VisionConfig d = mistral_small_4_vision();
  VisionConfig o;
  o.hidden_size = v.integer_or("hidden_size", d.hidden_size);
  o.intermediate_size = v.integer_or("intermediate_size", d.intermediate_size);
  o.n_layers = v.integer_or("num_hidden_layers", d.n_layers);
  o.n_heads = v.integer_or("num_attention_heads", d.n_heads);
  o.head_dim = v.integer_or("head_dim", o.hidden_size / std::max<int64_t>(o.n_heads, 1));
  o.num_channels = v.integer_or("num_channels", d.num_channels);
  o.image_size = v.integer_or("image_size", d.image_size);
  o.patch_size = v.integer_or("patch_size", d.patch_size);
  const std::optional<JsonFields> rp = v.object_if("rope_parameters");
  if (rp) {
    const std::string type = rp->string_or("rope_type", "default");
    if (type != "default" && type != "axial") rp->fail("rope_type", fmt::format("is \"{}\", expected \"axial\" (2-D RoPE)", type));
  }
  o.rope_theta = rp ? rp->number_or("rope_theta", d.rope_theta) : v.number_or("rope_theta", d.rope_theta);
  v.require_string_if_present("hidden_act", "silu", "the Pixtral FFN is SiLU-gated");
  o.spatial_merge_size = top.integer_or("spatial_merge_size", d.spatial_merge_size);
  o.image_token_id = top.integer_or("image_token_index", top.integer_or("image_token_id", d.image_token_id));
  o.projector_norm_eps = text_eps;  // transformers builds the pre-projector norm with the text eps
  top.require_string_if_present("projector_hidden_act", "gelu", "the projector MLP uses exact GELU");
  top.require_integer_if_present("vision_feature_layer", -1, "the projector reads the last vision layer");
  top.require_bool_if_present("multimodal_projector_bias", false, "the projector has no biases");
  return o;
}

// count_params in any number type: int64_t for the counts, double for validate()'s overflow bound, where
// `bound` also counts the sizes a config declares but does not use (MoE sizes of an all-dense model...).
template <typename N>
struct Counts {
  N text_total = 0, vision_total = 0, active_per_token = 0, bound = 0;
};

template <typename N>
Counts<N> count_params_as(const ModelConfig& m) {
  const TextConfig& t = m.text;
  const N H = static_cast<N>(t.hidden_size), V = static_cast<N>(t.vocab_size), nh = static_cast<N>(t.n_heads);
  const N dq = static_cast<N>(t.q_lora_rank), dkv = static_cast<N>(t.kv_lora_rank), dn = static_cast<N>(t.qk_nope_head_dim);
  const N dr = static_cast<N>(t.qk_rope_head_dim), dv = static_cast<N>(t.v_head_dim);
  const N E = static_cast<N>(t.n_routed_experts), k = static_cast<N>(t.n_experts_per_tok), S = static_cast<N>(t.n_shared_experts);
  const N attention = dq * H + dq + nh * (dn + dr) * dq + (dkv + dr) * H + dkv + nh * (dn + dv) * dkv + H * nh * dv;
  const N norms = 2 * H;
  const N expert = 3 * static_cast<N>(t.moe_intermediate_size) * H;
  const N dense_ffn = 3 * static_cast<N>(t.intermediate_size) * H;
  const N n_moe = static_cast<N>(t.n_layers - t.first_k_dense_replace), n_dense = static_cast<N>(t.first_k_dense_replace);
  const N moe_total = E * H + (E + S) * expert;
  const N moe_active = E * H + (k + S) * expert;
  const N embed = V * H, lm_head = t.tie_word_embeddings ? 0 : V * H;

  Counts<N> c;
  c.text_total = n_moe * (attention + norms + moe_total) + n_dense * (attention + norms + dense_ffn) + embed + lm_head + H;
  c.active_per_token =
      n_moe * (attention + norms + moe_active) + n_dense * (attention + norms + dense_ffn) + embed + lm_head + H;
  if (m.vision) {
    const VisionConfig& v = *m.vision;
    const N Hv = static_cast<N>(v.hidden_size), Iv = static_cast<N>(v.intermediate_size), P = static_cast<N>(v.patch_size);
    const N M = static_cast<N>(v.spatial_merge_size);
    const N tower = Hv * static_cast<N>(v.num_channels) * P * P + Hv + static_cast<N>(v.n_layers) * (4 * Hv * Hv + 3 * Hv * Iv + 2 * Hv);
    const N projector = Hv + Hv * Hv * M * M + Hv * H + H * H;
    c.vision_total = tower + projector;
  }
  c.bound = static_cast<N>(t.n_layers) * (attention + norms + moe_total + dense_ffn) + 2 * embed + H + c.vision_total;
  return c;
}

// The "quantization_config" of a quatre_int4 checkpoint, in both formats; null otherwise.
ojson int4_quantization_json(const ModelConfig& m) {
  if (m.quantization != WeightQuantization::kInt4) return nullptr;
  ojson q = {{"quant_method", "quatre_int4"},
             {"bits", 4},
             {"group_size", m.int4.group_size},
             {"symmetric", m.int4.is_symmetric},
             {"modules", std::string(int4_modules_name(m.int4.modules))},
             {"scale_dtype", "bfloat16"},
             {"other_linears", m.int4.others_fp8 ? "float8_e4m3fn" : "bfloat16"}};
  if (m.int4.others_fp8) q["activation_scheme"] = m.static_activation_scales ? "static" : "dynamic";
  return q;
}

// Every input width of a 4-bit weight must split into whole groups.
void validate_int4(const ModelConfig& m, const std::function<void(std::string_view, const std::string&)>& fail) {
  const TextConfig& t = m.text;
  const int64_t G = m.int4.group_size;
  if (G <= 0 || G % 2 != 0) fail("quantization_config.group_size", fmt::format("must be positive and even, got {}", G));
  std::vector<std::pair<const char*, int64_t>> widths;  // (key, input width of a 4-bit weight)
  if (t.first_k_dense_replace < t.n_layers) widths = {{"hidden_size", t.hidden_size}, {"moe_intermediate_size", t.moe_intermediate_size}};
  if (m.int4.modules == Int4Modules::kAll) {
    widths.insert(widths.end(), {{"hidden_size", t.hidden_size},
                                 {"q_lora_rank", t.q_lora_rank},
                                 {"kv_lora_rank", t.kv_lora_rank},
                                 {"num_attention_heads * v_head_dim", t.n_heads * t.v_head_dim}});
    if (t.first_k_dense_replace > 0) widths.push_back({"intermediate_size", t.intermediate_size});
  }
  for (const auto& [key, width] : widths) {
    if (width % G != 0) {
      fail("quantization_config.group_size",
           fmt::format("{} does not divide {} = {} (the input width of a 4-bit weight); pick a group size that divides it",
                       G, key, width));
    }
  }
}

}  // namespace

std::string_view format_name(CheckpointFormat f) {
  return f == CheckpointFormat::kHuggingFace ? "huggingface" : "mistral-native";
}

ModelConfig parse_hf_config(const json& config, std::string_view origin) {
  const JsonFields c(config, origin);
  ModelConfig m;
  m.format = CheckpointFormat::kHuggingFace;
  const std::string model_type = c.string_or("model_type", "");
  if (model_type == "mistral3") {
    m.architecture = "Mistral3ForConditionalGeneration";
    const JsonFields text = c.object("text_config");
    const std::string text_type = text.string_or("model_type", "mistral4");
    if (text_type != "mistral4") {
      text.fail("model_type", fmt::format("is \"{}\": this is not a Mistral Small 4 checkpoint (expected \"mistral4\")", text_type));
    }
    m.text = parse_hf_text(text);
    // The outer config may carry tie_word_embeddings too; it wins for the lm_head (transformers ties at the top level).
    m.text.tie_word_embeddings = c.boolean_or("tie_word_embeddings", m.text.tie_word_embeddings);
    if (const std::optional<JsonFields> vision = c.object_if("vision_config")) {
      const std::string vision_type = vision->string_or("model_type", "pixtral");
      if (vision_type != "pixtral") vision->fail("model_type", fmt::format("is \"{}\", expected \"pixtral\"", vision_type));
      m.vision = parse_hf_vision(c, *vision, m.text.rms_norm_eps);
    }
  } else if (model_type == "mistral4") {
    m.architecture = "Mistral4ForCausalLM";
    m.text = parse_hf_text(c);
  } else {
    c.fail("model_type", fmt::format("is \"{}\": this is not a Mistral Small 4 checkpoint (expected \"mistral3\" with a "
                                     "\"mistral4\" text_config, or \"mistral4\")",
                                     model_type));
  }
  parse_hf_quantization(c, m);
  m.validate(origin);
  return m;
}

ModelConfig parse_params_json(const json& params, std::string_view origin) {
  const JsonFields p(params, origin);
  ModelConfig m;
  m.format = CheckpointFormat::kMistralNative;
  m.architecture = "mistral-native";
  TextConfig& t = m.text;
  t.vocab_size = p.integer("vocab_size");
  t.hidden_size = p.integer("dim");
  t.n_layers = p.integer("n_layers");
  t.n_heads = p.integer("n_heads");
  t.q_lora_rank = p.integer("q_lora_rank");
  t.kv_lora_rank = p.integer("kv_lora_rank");
  t.qk_nope_head_dim = p.integer("qk_nope_head_dim");
  t.qk_rope_head_dim = p.integer("qk_rope_head_dim");
  t.v_head_dim = p.integer("v_head_dim");
  t.intermediate_size = p.integer_or("hidden_dim", 0);
  t.rms_norm_eps = p.number("norm_eps");
  t.tie_word_embeddings = p.boolean_or("tied_embeddings", false);
  t.max_position_embeddings = p.integer_or("max_position_embeddings", p.integer_or("max_seq_len", 0));
  if (p.has("head_dim") && static_cast<double>(p.integer("head_dim")) != unvalidated_qk_head_dim(t)) {
    p.fail("head_dim", fmt::format("is {}, expected qk_nope_head_dim + qk_rope_head_dim = {}", p.integer("head_dim"),
                                   unvalidated_qk_head_dim(t)));
  }

  const JsonFields moe = p.object("moe");
  t.n_routed_experts = moe.integer("num_experts");
  t.n_experts_per_tok = moe.integer("num_experts_per_tok");
  t.moe_intermediate_size = moe.integer("expert_hidden_dim");
  t.n_shared_experts = moe.integer_or("num_shared_experts", 0);
  t.first_k_dense_replace = moe.integer_or("first_k_dense_replace", 0);
  t.routed_scaling_factor = moe.number_or("routed_scale", 1.0);
  moe.require_integer_if_present("route_every_n", 1, "every layer after first_k_dense_replace is MoE");
  moe.require_integer_if_present("num_expert_groups", 1, "group-limited routing is not part of Mistral Small 4");
  moe.require_integer_if_present("num_expert_groups_per_tok", 1, "group-limited routing is not part of Mistral Small 4");
  moe.require_bool_if_present("use_load_balancing_bias", false, "the router has no correction bias");

  RopeConfig& r = t.rope;
  r.theta = p.number_or("rope_theta", 10000.0);
  if (const std::optional<JsonFields> yarn = p.object_if("yarn")) {
    r.is_yarn = true;
    r.factor = yarn->number("factor");
    r.original_max_position_embeddings = yarn->integer("original_max_position_embeddings");
    r.beta_fast = yarn->number_or("beta", 32.0);
    r.beta_slow = yarn->number_or("alpha", 1.0);
    r.mscale = 1.0;  // the converter writes mscale = mscale_all_dim = 1.0 unconditionally (MODEL.md §1.1)
    r.mscale_all_dim = 1.0;
    if (yarn->has("apply_scale")) r.apply_scale = yarn->boolean_or("apply_scale", false);
  }
  if (const std::optional<JsonFields> l4 = p.object_if("llama_4_scaling")) {
    r.llama_4_scaling_beta = l4->number("beta");
    r.llama_4_original_max_position_embeddings = l4->integer("original_max_position_embeddings");
  }

  if (const std::optional<JsonFields> q = p.object_if("quantization")) {
    const std::string weight = q->string("qformat_weight");
    if (weight != "fp8_e4m3") q->fail("qformat_weight", fmt::format("is \"{}\", only \"fp8_e4m3\" is supported", weight));
    const std::string act = q->string_or("qscheme_act", "TENSOR");
    if (act != "TENSOR" && act != "NO_SCALES") {
      q->fail("qscheme_act", fmt::format("is \"{}\", expected \"TENSOR\" (static) or \"NO_SCALES\" (dynamic)", act));
    }
    m.quantization = WeightQuantization::kFp8PerTensor;
    m.static_activation_scales = act == "TENSOR";
  }
  if (const std::optional<JsonFields> q = p.object_if("quantization_config")) {
    if (q->string_or("quant_method", "") != "quatre_int4") {
      p.fail("quantization_config", "compressed-tensors checkpoints (e.g. the NVFP4 release) are not supported "
                                    "(only quatre's own \"quant_method\": \"quatre_int4\")");
    }
    if (m.quantization != WeightQuantization::kNone) p.fail("quantization_config", "and \"quantization\" (FP8) both present");
    parse_int4_quantization(*q, m);
  }

  if (const std::optional<JsonFields> v = p.object_if("vision_encoder")) {
    VisionConfig o;
    o.hidden_size = v->integer("hidden_size");
    o.intermediate_size = v->integer("intermediate_size");
    o.n_layers = v->integer("num_hidden_layers");
    o.n_heads = v->integer("num_attention_heads");
    o.head_dim = o.hidden_size / std::max<int64_t>(o.n_heads, 1);
    o.num_channels = v->integer_or("num_channels", 3);
    o.image_size = v->integer_or("max_image_size", v->integer("image_size"));
    o.patch_size = v->integer("patch_size");
    o.rope_theta = v->number_or("rope_theta", 10000.0);
    o.spatial_merge_size = v->integer_or("spatial_merge_size", 1);
    o.image_token_id = v->integer_or("image_token_id", 10);
    o.image_break_token_id = v->integer_or("image_break_token_id", 12);
    o.image_end_token_id = v->integer_or("image_end_token_id", 13);
    o.projector_norm_eps = 1e-5;  // Mistral's reference (MODEL.md §7.4)
    v->require_bool_if_present("adapter_bias", false, "the projector has no biases");
    v->require_bool_if_present("add_pre_mm_projector_layer_norm", true, "Mistral Small 4 has the pre-projector norm");
    v->require_string_if_present("mm_projector_id", "patch_merge", "the projector starts with the 2x2 patch merger");
    m.vision = o;
  }
  m.validate(origin);
  return m;
}

void ModelConfig::validate(std::string_view origin) const {
  auto fail = [&](std::string_view key, const std::string& message) {
    throw LoadError(fmt::format("{}: {}: {}", origin, key, message));
  };
  // Every size below 2^31 and the model below 2^53 parameters: then no product of sizes (shapes, strides,
  // byte offsets, parameter counts) overflows int64, whatever a config file says.
  constexpr int64_t kMaxSize = (int64_t{1} << 31) - 1;
  auto at_most = [&](std::string_view key, int64_t v) {
    if (v > kMaxSize) fail(key, fmt::format("is {}, above the limit of {}", v, kMaxSize));
  };
  auto positive = [&](std::string_view key, int64_t v) {
    if (v <= 0) fail(key, fmt::format("must be positive, got {}", v));
    at_most(key, v);
  };
  const TextConfig& t = text;
  for (const auto& [key, v] : {std::pair<std::string_view, int64_t>{"intermediate_size", t.intermediate_size},
                               {"n_routed_experts", t.n_routed_experts},
                               {"num_experts_per_tok", t.n_experts_per_tok},
                               {"moe_intermediate_size", t.moe_intermediate_size},
                               {"n_shared_experts", t.n_shared_experts}}) {
    if (v < 0) fail(key, fmt::format("must not be negative, got {}", v));
    at_most(key, v);
  }
  positive("vocab_size", t.vocab_size);
  positive("hidden_size", t.hidden_size);
  positive("num_hidden_layers", t.n_layers);
  positive("num_attention_heads", t.n_heads);
  positive("q_lora_rank", t.q_lora_rank);
  positive("kv_lora_rank", t.kv_lora_rank);
  positive("qk_nope_head_dim", t.qk_nope_head_dim);
  positive("qk_rope_head_dim", t.qk_rope_head_dim);
  positive("v_head_dim", t.v_head_dim);
  if (t.qk_rope_head_dim % 2 != 0) fail("qk_rope_head_dim", fmt::format("must be even for RoPE pairs, got {}", t.qk_rope_head_dim));
  if (t.vocab_size <= 13) fail("vocab_size", fmt::format("is {}; the special ids up to 13 ([IMG_END]) must exist", t.vocab_size));
  for (int64_t id : {t.bos_token_id, t.eos_token_id, t.pad_token_id}) {
    if (id < 0 || id >= t.vocab_size) fail("bos/eos/pad_token_id", fmt::format("id {} outside the vocabulary of {}", id, t.vocab_size));
  }
  if (t.first_k_dense_replace < 0 || t.first_k_dense_replace > t.n_layers) {
    fail("first_k_dense_replace", fmt::format("is {}, expected 0..num_hidden_layers ({})", t.first_k_dense_replace, t.n_layers));
  }
  if (t.first_k_dense_replace > 0) positive("intermediate_size", t.intermediate_size);
  if (t.first_k_dense_replace < t.n_layers) {
    positive("n_routed_experts", t.n_routed_experts);
    positive("moe_intermediate_size", t.moe_intermediate_size);
    if (t.n_experts_per_tok <= 0 || t.n_experts_per_tok > t.n_routed_experts) {
      fail("num_experts_per_tok", fmt::format("is {}, expected 1..n_routed_experts ({})", t.n_experts_per_tok, t.n_routed_experts));
    }
    if (t.n_shared_experts < 0 || t.n_shared_experts > 1) {
      fail("n_shared_experts", fmt::format("is {}, expected 0 or 1", t.n_shared_experts));
    }
  }
  if (!(t.rms_norm_eps > 0 && t.rms_norm_eps < 1)) fail("rms_norm_eps", fmt::format("is {}, expected in (0, 1)", t.rms_norm_eps));
  if (!(t.routed_scaling_factor > 0)) fail("routed_scaling_factor", fmt::format("must be positive, got {}", t.routed_scaling_factor));
  positive("max_position_embeddings", t.max_position_embeddings);
  const RopeConfig& r = t.rope;
  if (!(r.theta > 1)) fail("rope_theta", fmt::format("must be > 1, got {}", r.theta));
  if (r.is_yarn) {
    if (!(r.factor >= 1)) fail("rope_parameters.factor", fmt::format("must be >= 1, got {}", r.factor));
    positive("rope_parameters.original_max_position_embeddings", r.original_max_position_embeddings);
    if (!(r.beta_fast > r.beta_slow && r.beta_slow > 0)) {
      fail("rope_parameters.beta_fast", fmt::format("beta_fast {} must exceed beta_slow {} > 0", r.beta_fast, r.beta_slow));
    }
  }
  if (r.llama_4_scaling_beta < 0) fail("llama_4_scaling_beta", fmt::format("must be >= 0, got {}", r.llama_4_scaling_beta));
  if (r.llama_4_scaling_beta > 0) positive("llama_4_scaling.original_max_position_embeddings", r.llama_4_original_max_position_embeddings);
  if (quantization == WeightQuantization::kInt4) validate_int4(*this, fail);

  if (vision) {
    const VisionConfig& v = *vision;
    positive("vision.hidden_size", v.hidden_size);
    positive("vision.intermediate_size", v.intermediate_size);
    positive("vision.num_hidden_layers", v.n_layers);
    positive("vision.num_attention_heads", v.n_heads);
    positive("vision.patch_size", v.patch_size);
    positive("vision.image_size", v.image_size);
    positive("vision.head_dim", v.head_dim);
    if (v.head_dim * v.n_heads != v.hidden_size) {
      fail("vision.head_dim", fmt::format("{} x {} heads != hidden_size {}", v.head_dim, v.n_heads, v.hidden_size));
    }
    if (v.head_dim % 4 != 0) fail("vision.head_dim", fmt::format("must be a multiple of 4 for the 2-D RoPE, got {}", v.head_dim));
    if (v.num_channels != 3) fail("vision.num_channels", fmt::format("is {}, expected 3 (RGB)", v.num_channels));
    if (v.spatial_merge_size != 2) fail("vision.spatial_merge_size", fmt::format("is {}, expected 2", v.spatial_merge_size));
    for (int64_t id : {v.image_token_id, v.image_break_token_id, v.image_end_token_id}) {
      if (id < 0 || id >= t.vocab_size) fail("vision.image_token_id", fmt::format("id {} outside the vocabulary", id));
    }
  }
  const double params = count_params_as<double>(*this).bound;
  if (!(params < 0x1p53)) fail("hidden_size", fmt::format("the sizes give {:.4g} parameters, above the limit of 2^53", params));
  const double kv_bytes = (static_cast<double>(t.kv_lora_rank) + static_cast<double>(t.qk_rope_head_dim)) * 2 * static_cast<double>(t.n_layers);
  if (!(kv_bytes < 0x1p53)) fail("kv_lora_rank", fmt::format("the KV cache would take {:.4g} bytes per token", kv_bytes));
}

json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw LoadError(fmt::format("{}: cannot open", path.string()));
  std::stringstream buffer;
  buffer << in.rdbuf();
  try {
    return json::parse(buffer.str());
  } catch (const json::exception& e) {
    throw LoadError(fmt::format("{}: not valid JSON: {}", path.string(), e.what()));
  }
}

ModelConfig load_model_config(const std::filesystem::path& dir, std::optional<CheckpointFormat> format) {
  const std::filesystem::path params = dir / "params.json", config = dir / "config.json";
  const bool has_params = std::filesystem::exists(params), has_config = std::filesystem::exists(config);
  if (!format) {
    if (has_params) format = CheckpointFormat::kMistralNative;
    else if (has_config) format = CheckpointFormat::kHuggingFace;
    else throw LoadError(fmt::format("{}: no params.json or config.json: not a Mistral Small 4 checkpoint directory", dir.string()));
  }
  if (*format == CheckpointFormat::kMistralNative) {
    if (!has_params) throw LoadError(fmt::format("{}: no params.json (asked for the Mistral-native format)", dir.string()));
    return parse_params_json(read_json_file(params), params.string());
  }
  if (!has_config) throw LoadError(fmt::format("{}: no config.json (asked for the Hugging Face format)", dir.string()));
  return parse_hf_config(read_json_file(config), config.string());
}

ojson to_hf_config(const ModelConfig& m) {
  const TextConfig& t = m.text;
  ojson rope = {{"rope_type", t.rope.is_yarn ? "yarn" : "default"}, {"rope_theta", t.rope.theta}};
  if (t.rope.is_yarn) {
    rope["type"] = "yarn";
    rope["factor"] = t.rope.factor;
    rope["original_max_position_embeddings"] = t.rope.original_max_position_embeddings;
    rope["beta_fast"] = t.rope.beta_fast;
    rope["beta_slow"] = t.rope.beta_slow;
    rope["mscale"] = t.rope.mscale;
    rope["mscale_all_dim"] = t.rope.mscale_all_dim;
  }
  if (t.rope.llama_4_scaling_beta > 0) rope["llama_4_scaling_beta"] = t.rope.llama_4_scaling_beta;
  rope["partial_rotary_factor"] = static_cast<double>(t.qk_rope_head_dim) / static_cast<double>(t.qk_head_dim());

  ojson text = {{"model_type", "mistral4"},
                {"vocab_size", t.vocab_size},
                {"hidden_size", t.hidden_size},
                {"intermediate_size", t.intermediate_size},
                {"moe_intermediate_size", t.moe_intermediate_size},
                {"num_hidden_layers", t.n_layers},
                {"num_attention_heads", t.n_heads},
                {"num_key_value_heads", t.n_heads},
                {"head_dim", t.qk_head_dim()},
                {"q_lora_rank", t.q_lora_rank},
                {"kv_lora_rank", t.kv_lora_rank},
                {"qk_nope_head_dim", t.qk_nope_head_dim},
                {"qk_rope_head_dim", t.qk_rope_head_dim},
                {"v_head_dim", t.v_head_dim},
                {"n_routed_experts", t.n_routed_experts},
                {"num_experts_per_tok", t.n_experts_per_tok},
                {"n_shared_experts", t.n_shared_experts},
                {"first_k_dense_replace", t.first_k_dense_replace},
                {"n_group", 1},
                {"topk_group", 1},
                {"norm_topk_prob", true},
                {"routed_scaling_factor", t.routed_scaling_factor},
                {"hidden_act", "silu"},
                {"rms_norm_eps", t.rms_norm_eps},
                {"attention_bias", false},
                {"max_position_embeddings", t.max_position_embeddings},
                {"rope_interleave", true},
                {"rope_parameters", rope},
                {"tie_word_embeddings", t.tie_word_embeddings},
                {"bos_token_id", t.bos_token_id},
                {"eos_token_id", t.eos_token_id},
                {"pad_token_id", t.pad_token_id}};
  ojson quant = int4_quantization_json(m);
  if (m.quantization == WeightQuantization::kFp8PerTensor) {
    ojson not_converted = m.vision ? ojson{"model.vision_tower", "model.multi_modal_projector", "lm_head"} : ojson{"lm_head"};
    quant = {{"quant_method", "fp8"},
             {"activation_scheme", m.static_activation_scales ? "static" : "dynamic"},
             {"weight_block_size", nullptr},
             {"modules_to_not_convert", not_converted}};
  }
  if (!m.vision) {
    ojson out = {{"architectures", {"Mistral4ForCausalLM"}}};
    for (const auto& [k, v] : text.items()) out[k] = v;
    out["dtype"] = "bfloat16";
    if (!quant.is_null()) out["quantization_config"] = quant;
    return out;
  }
  const VisionConfig& v = *m.vision;
  ojson vision = {{"model_type", "pixtral"},
                  {"hidden_size", v.hidden_size},
                  {"intermediate_size", v.intermediate_size},
                  {"num_hidden_layers", v.n_layers},
                  {"num_attention_heads", v.n_heads},
                  {"head_dim", v.head_dim},
                  {"num_channels", v.num_channels},
                  {"image_size", v.image_size},
                  {"patch_size", v.patch_size},
                  {"hidden_act", "silu"},
                  {"rope_parameters", {{"rope_type", "axial"}, {"rope_theta", v.rope_theta}}}};  // what transformers writes
  ojson out = {{"architectures", {"Mistral3ForConditionalGeneration"}},
               {"model_type", "mistral3"},
               {"image_token_index", v.image_token_id},
               {"projector_hidden_act", "gelu"},
               {"vision_feature_layer", -1},
               {"multimodal_projector_bias", false},
               {"spatial_merge_size", v.spatial_merge_size},
               {"tie_word_embeddings", t.tie_word_embeddings},
               {"dtype", "bfloat16"},
               {"text_config", text},
               {"vision_config", vision}};
  if (!quant.is_null()) out["quantization_config"] = quant;
  return out;
}

ojson to_hf_generation_config(const ModelConfig& m) {
  return {{"bos_token_id", m.text.bos_token_id}, {"eos_token_id", m.text.eos_token_id}, {"pad_token_id", m.text.pad_token_id}};
}

ojson to_params_json(const ModelConfig& m) {
  const TextConfig& t = m.text;
  ojson p = {{"dim", t.hidden_size},
             {"n_layers", t.n_layers},
             {"head_dim", t.qk_head_dim()},
             {"hidden_dim", t.intermediate_size},
             {"n_heads", t.n_heads},
             {"n_kv_heads", t.n_heads},
             {"norm_eps", t.rms_norm_eps},
             {"vocab_size", t.vocab_size},
             {"rope_theta", t.rope.theta},
             {"tied_embeddings", t.tie_word_embeddings},
             {"max_position_embeddings", t.max_position_embeddings},
             {"q_lora_rank", t.q_lora_rank},
             {"kv_lora_rank", t.kv_lora_rank},
             {"qk_nope_head_dim", t.qk_nope_head_dim},
             {"qk_rope_head_dim", t.qk_rope_head_dim},
             {"v_head_dim", t.v_head_dim},
             {"moe",
              {{"num_experts", t.n_routed_experts},
               {"num_experts_per_tok", t.n_experts_per_tok},
               {"expert_hidden_dim", t.moe_intermediate_size},
               {"num_shared_experts", t.n_shared_experts},
               {"first_k_dense_replace", t.first_k_dense_replace},
               {"route_every_n", 1},
               {"routed_scale", t.routed_scaling_factor},
               {"num_expert_groups", 1},
               {"num_expert_groups_per_tok", 1}}}};
  if (t.rope.is_yarn) {
    p["yarn"] = {{"factor", t.rope.factor},
                 {"original_max_position_embeddings", t.rope.original_max_position_embeddings},
                 {"beta", t.rope.beta_fast},
                 {"alpha", t.rope.beta_slow},
                 {"apply_scale", t.rope.apply_scale.value_or(false)}};
  }
  if (t.rope.llama_4_scaling_beta > 0) {
    p["llama_4_scaling"] = {{"beta", t.rope.llama_4_scaling_beta},
                            {"original_max_position_embeddings", t.rope.llama_4_original_max_position_embeddings}};
  }
  if (m.quantization == WeightQuantization::kFp8PerTensor) {
    p["quantization"] = {{"qformat_weight", "fp8_e4m3"}, {"qscheme_act", m.static_activation_scales ? "TENSOR" : "NO_SCALES"}};
  }
  if (m.quantization == WeightQuantization::kInt4) p["quantization_config"] = int4_quantization_json(m);
  if (m.vision) {
    const VisionConfig& v = *m.vision;
    p["vision_encoder"] = {{"hidden_size", v.hidden_size},
                           {"intermediate_size", v.intermediate_size},
                           {"num_hidden_layers", v.n_layers},
                           {"num_attention_heads", v.n_heads},
                           {"num_channels", v.num_channels},
                           {"image_size", v.image_size},
                           {"max_image_size", v.image_size},
                           {"patch_size", v.patch_size},
                           {"rope_theta", v.rope_theta},
                           {"spatial_merge_size", v.spatial_merge_size},
                           {"image_token_id", v.image_token_id},
                           {"image_break_token_id", v.image_break_token_id},
                           {"image_end_token_id", v.image_end_token_id},
                           {"adapter_bias", false},
                           {"add_pre_mm_projector_layer_norm", true},
                           {"mm_projector_id", "patch_merge"}};
  }
  return p;
}

std::vector<std::string> preset_names() { return {"mistral-small-4", "tiny", "tiny-dense", "tiny-yarn32"}; }

ModelConfig preset(std::string_view name) {
  ModelConfig m;
  m.format = CheckpointFormat::kHuggingFace;
  m.architecture = "Mistral3ForConditionalGeneration";
  if (name == "mistral-small-4") {
    m.text = mistral_small_4_text();
    m.vision = mistral_small_4_vision();
    m.quantization = WeightQuantization::kFp8PerTensor;
    return m;
  }
  if (name != "tiny" && name != "tiny-dense" && name != "tiny-yarn32") {
    throw InvalidRequest(fmt::format("unknown preset '{}' (known: mistral-small-4, tiny, tiny-dense, tiny-yarn32)", name));
  }
  // MODEL.md §8.1: small enough to run in milliseconds, with every branch of the real model: q and kv
  // LoRA, dv != dn + dr, several experts with top-2 and a shared expert, YaRN with a 64-token original
  // context so ~200-token prompts cross the YaRN and Llama-4 steps.
  TextConfig& t = m.text;
  t.vocab_size = 1536;  // 1000 specials + 536 BPE ranks, so a real tekken.json layout fits
  t.hidden_size = 64;
  t.n_layers = 2;
  t.n_heads = 4;
  t.q_lora_rank = 48;
  t.kv_lora_rank = 32;
  t.qk_nope_head_dim = 16;
  t.qk_rope_head_dim = 32;
  t.v_head_dim = 24;
  t.n_routed_experts = 8;
  t.n_experts_per_tok = 2;
  t.n_shared_experts = 1;
  t.moe_intermediate_size = 32;
  t.intermediate_size = 96;
  t.first_k_dense_replace = name == "tiny-dense" ? 1 : 0;
  t.max_position_embeddings = 1024;
  t.rope = {.theta = 10000.0,
            .is_yarn = true,
            .factor = 16.0,
            .original_max_position_embeddings = 64,
            .beta_fast = name == "tiny-yarn32" ? 32.0 : 4.0,
            .beta_slow = 1.0,
            .mscale = 1.0,
            .mscale_all_dim = 1.0,
            .apply_scale = std::nullopt,
            .llama_4_scaling_beta = 0.1,
            .llama_4_original_max_position_embeddings = 64};
  m.vision = VisionConfig{.hidden_size = 32,
                          .intermediate_size = 64,
                          .n_layers = 2,
                          .n_heads = 2,
                          .head_dim = 16,
                          .num_channels = 3,
                          .image_size = 112,
                          .patch_size = 14,
                          .rope_theta = 10000.0,
                          .spatial_merge_size = 2};
  return m;
}

std::string_view int4_modules_name(Int4Modules m) { return m == Int4Modules::kAll ? "all" : "experts"; }

ParamCounts count_params(const ModelConfig& m) {
  const Counts<int64_t> c = count_params_as<int64_t>(m);
  return {.text_total = c.text_total, .vision_total = c.vision_total, .active_per_token = c.active_per_token};
}

int64_t kv_bytes_per_token(const TextConfig& t) { return (t.kv_lora_rank + t.qk_rope_head_dim) * 2 * t.n_layers; }

}  // namespace quatre::io
