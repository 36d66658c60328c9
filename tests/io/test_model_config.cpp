// io/model_config: the real release's config.json and params.json, the exact config.json transformers 5.17
// writes for a tiny model, writer/parser round trips of every preset, parameter counts (MODEL.md §1.3),
// rejections naming the key, and load_model_config's choice between the two files.
#include "io/model_config.h"

#include <cmath>
#include <filesystem>
#include <limits>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/weight_map.h"
#include "io_test_util.h"

namespace quatre::io {
namespace {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;
using test::TempDir;
using test::write_bytes;

constexpr const char* kOrigin = "ckpt/config.json";

// Verbatim: what transformers 5.17 writes for a tiny Mistral3 with a mistral4 text model.
constexpr const char* kTinyTransformersConfig =
    R"({"architectures":["Mistral3ForConditionalGeneration"],"dtype":"float32","image_token_index":10,"model_type":"mistral3","multimodal_projector_bias":false,"projector_hidden_act":"gelu","spatial_merge_size":2,"text_config":{"attention_bias":false,"attention_dropout":0.0,"bos_token_id":1,"eos_token_id":2,"first_k_dense_replace":0,"head_dim":48,"hidden_act":"silu","hidden_size":64,"initializer_range":0.02,"intermediate_size":96,"kv_lora_rank":32,"max_position_embeddings":1024,"model_type":"mistral4","moe_intermediate_size":32,"n_group":1,"n_routed_experts":8,"n_shared_experts":1,"norm_topk_prob":true,"num_attention_heads":4,"num_experts_per_tok":2,"num_hidden_layers":2,"num_key_value_heads":4,"pad_token_id":11,"pretraining_tp":1,"q_lora_rank":48,"qk_head_dim":48,"qk_nope_head_dim":16,"qk_rope_head_dim":32,"rms_norm_eps":1e-06,"rope_interleave":true,"rope_parameters":{"beta_fast":4.0,"beta_slow":1.0,"factor":16.0,"llama_4_scaling_beta":0.1,"mscale":1.0,"mscale_all_dim":1.0,"original_max_position_embeddings":64,"partial_rotary_factor":0.6666666666666666,"rope_theta":10000.0,"rope_type":"yarn"},"routed_scaling_factor":1.0,"tie_word_embeddings":false,"topk_group":1,"use_cache":true,"v_head_dim":24,"vocab_size":1536},"tie_word_embeddings":false,"transformers_version":"5.17.0","vision_config":{"attention_dropout":0.0,"head_dim":16,"hidden_act":"silu","hidden_size":32,"image_size":112,"initializer_range":0.02,"intermediate_size":64,"model_type":"pixtral","num_attention_heads":2,"num_channels":3,"num_hidden_layers":2,"patch_size":14,"rope_parameters":{"rope_theta":10000.0,"rope_type":"axial"}},"vision_feature_layer":-1})";

// The release's config.json as MODEL.md §2.3 describes it (text values §1.1, vision §1.2).
constexpr const char* kRealHfConfig = R"({
  "architectures": ["Mistral3ForConditionalGeneration"], "model_type": "mistral3",
  "image_token_index": 10, "projector_hidden_act": "gelu", "vision_feature_layer": -1,
  "multimodal_projector_bias": false, "spatial_merge_size": 2, "tie_word_embeddings": false,
  "quantization_config": {"quant_method": "fp8", "activation_scheme": "static", "weight_block_size": null,
                          "modules_to_not_convert": ["model.vision_tower", "model.multi_modal_projector", "lm_head"]},
  "text_config": {
    "model_type": "mistral4", "vocab_size": 131072, "hidden_size": 4096, "num_hidden_layers": 36,
    "num_attention_heads": 32, "num_key_value_heads": 32, "head_dim": 128, "q_lora_rank": 1024, "kv_lora_rank": 256,
    "qk_nope_head_dim": 64, "qk_rope_head_dim": 64, "v_head_dim": 128, "n_routed_experts": 128,
    "num_experts_per_tok": 4, "n_shared_experts": 1, "moe_intermediate_size": 2048, "first_k_dense_replace": 0,
    "n_group": 1, "topk_group": 1, "norm_topk_prob": true, "routed_scaling_factor": 1.0, "intermediate_size": 12288,
    "hidden_act": "silu", "rms_norm_eps": 1e-06, "attention_bias": false, "tie_word_embeddings": false,
    "max_position_embeddings": 1048576, "rope_interleave": true, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 11,
    "rope_parameters": {"rope_type": "yarn", "type": "yarn", "rope_theta": 10000.0, "factor": 128.0,
                        "original_max_position_embeddings": 8192, "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0,
                        "mscale_all_dim": 1.0, "llama_4_scaling_beta": 0.1, "partial_rotary_factor": 0.5}},
  "vision_config": {"model_type": "pixtral", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                    "num_attention_heads": 16, "head_dim": 64, "num_channels": 3, "image_size": 1540, "patch_size": 14,
                    "hidden_act": "silu", "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}}
})";

// The release's params.json with every key of MODEL.md §2.1.
constexpr const char* kRealParamsJson = R"({
  "dim": 4096, "n_layers": 36, "head_dim": 128, "hidden_dim": 12288, "n_heads": 32, "n_kv_heads": 32,
  "norm_eps": 1e-06, "vocab_size": 131072, "rope_theta": 10000.0, "tied_embeddings": false,
  "max_position_embeddings": 1048576, "q_lora_rank": 1024, "kv_lora_rank": 256, "qk_nope_head_dim": 64,
  "qk_rope_head_dim": 64, "v_head_dim": 128,
  "moe": {"num_experts": 128, "num_experts_per_tok": 4, "expert_hidden_dim": 2048, "num_shared_experts": 1,
          "first_k_dense_replace": 0, "route_every_n": 1, "routed_scale": 1.0, "num_expert_groups": 1,
          "num_expert_groups_per_tok": 1, "expert_parallel": 1, "expert_model_parallel": 1,
          "renorm_strategy": "WEIGHTS", "use_load_balancing_bias": false},
  "yarn": {"factor": 128.0, "original_max_position_embeddings": 8192, "beta": 32.0, "alpha": 1.0, "apply_scale": false},
  "llama_4_scaling": {"beta": 0.1, "original_max_position_embeddings": 8192},
  "quantization": {"qformat_weight": "fp8_e4m3", "qscheme_act": "TENSOR"},
  "vision_encoder": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
                     "num_channels": 3, "image_size": 1540, "max_image_size": 1540, "patch_size": 14,
                     "rope_theta": 10000.0, "spatial_merge_size": 2, "image_token_id": 10, "image_break_token_id": 12,
                     "image_end_token_id": 13, "adapter_bias": false, "add_pre_mm_projector_layer_norm": true,
                     "mm_projector_id": "patch_merge"}
})";

// A text-only Mistral4ForCausalLM config.json with the tiny dimensions.
constexpr const char* kCausalLmConfig = R"({
  "architectures": ["Mistral4ForCausalLM"], "model_type": "mistral4", "dtype": "bfloat16",
  "vocab_size": 1536, "hidden_size": 64, "intermediate_size": 96, "moe_intermediate_size": 32,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 48,
  "q_lora_rank": 48, "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 32, "v_head_dim": 24,
  "n_routed_experts": 8, "num_experts_per_tok": 2, "n_shared_experts": 1, "first_k_dense_replace": 1,
  "n_group": 1, "topk_group": 1, "norm_topk_prob": true, "routed_scaling_factor": 2.5, "hidden_act": "silu",
  "rms_norm_eps": 1e-05, "attention_bias": false, "max_position_embeddings": 4096, "rope_interleave": true,
  "rope_parameters": {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0, "original_max_position_embeddings": 256,
                      "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 0.707, "mscale_all_dim": 0.5},
  "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 11
})";

// Field-by-field equality of two configs; names the field that differs.
void expect_same(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.format, b.format);
  EXPECT_EQ(a.architecture, b.architecture);
  EXPECT_EQ(a.quantization, b.quantization);
  EXPECT_EQ(a.static_activation_scales, b.static_activation_scales);
  const TextConfig &x = a.text, &y = b.text;
#define SAME(field) EXPECT_EQ(x.field, y.field) << #field
  SAME(vocab_size); SAME(hidden_size); SAME(n_layers); SAME(n_heads); SAME(q_lora_rank); SAME(kv_lora_rank);
  SAME(qk_nope_head_dim); SAME(qk_rope_head_dim); SAME(v_head_dim); SAME(n_routed_experts); SAME(n_experts_per_tok);
  SAME(n_shared_experts); SAME(moe_intermediate_size); SAME(intermediate_size); SAME(first_k_dense_replace);
  SAME(routed_scaling_factor); SAME(rms_norm_eps); SAME(max_position_embeddings); SAME(tie_word_embeddings);
  SAME(bos_token_id); SAME(eos_token_id); SAME(pad_token_id);
  SAME(rope.theta); SAME(rope.is_yarn); SAME(rope.factor); SAME(rope.original_max_position_embeddings);
  SAME(rope.beta_fast); SAME(rope.beta_slow); SAME(rope.mscale); SAME(rope.mscale_all_dim); SAME(rope.apply_scale);
  SAME(rope.llama_4_scaling_beta); SAME(rope.llama_4_original_max_position_embeddings);
#undef SAME
  ASSERT_EQ(a.vision.has_value(), b.vision.has_value());
  if (!a.vision) return;
  const VisionConfig &v = *a.vision, &w = *b.vision;
#define SAME(field) EXPECT_EQ(v.field, w.field) << "vision." #field
  SAME(hidden_size); SAME(intermediate_size); SAME(n_layers); SAME(n_heads); SAME(head_dim); SAME(num_channels);
  SAME(image_size); SAME(patch_size); SAME(rope_theta); SAME(spatial_merge_size); SAME(image_token_id);
  SAME(image_break_token_id); SAME(image_end_token_id); SAME(norm_eps); SAME(projector_norm_eps);
#undef SAME
}

// The values of MODEL.md §1.1/§1.2, written out independently of the presets.
void expect_release_values(const ModelConfig& m) {
  const TextConfig& t = m.text;
  EXPECT_EQ(t.vocab_size, 131072);
  EXPECT_EQ(t.hidden_size, 4096);
  EXPECT_EQ(t.n_layers, 36);
  EXPECT_EQ(t.n_heads, 32);
  EXPECT_EQ(t.q_lora_rank, 1024);
  EXPECT_EQ(t.kv_lora_rank, 256);
  EXPECT_EQ(t.qk_nope_head_dim, 64);
  EXPECT_EQ(t.qk_rope_head_dim, 64);
  EXPECT_EQ(t.qk_head_dim(), 128);
  EXPECT_EQ(t.v_head_dim, 128);
  EXPECT_EQ(t.n_routed_experts, 128);
  EXPECT_EQ(t.n_experts_per_tok, 4);
  EXPECT_EQ(t.n_shared_experts, 1);
  EXPECT_EQ(t.moe_intermediate_size, 2048);
  EXPECT_EQ(t.intermediate_size, 12288);
  EXPECT_EQ(t.first_k_dense_replace, 0);
  EXPECT_TRUE(t.is_moe_layer(0));
  EXPECT_EQ(t.routed_scaling_factor, 1.0);
  EXPECT_EQ(t.rms_norm_eps, 1e-6);
  EXPECT_EQ(t.max_position_embeddings, 1048576);
  EXPECT_FALSE(t.tie_word_embeddings);
  EXPECT_EQ(t.bos_token_id, 1);
  EXPECT_EQ(t.eos_token_id, 2);
  EXPECT_EQ(t.pad_token_id, 11);
  EXPECT_EQ(t.rope.theta, 10000.0);
  EXPECT_TRUE(t.rope.is_yarn);
  EXPECT_EQ(t.rope.factor, 128.0);
  EXPECT_EQ(t.rope.original_max_position_embeddings, 8192);
  EXPECT_EQ(t.rope.beta_fast, 32.0);
  EXPECT_EQ(t.rope.beta_slow, 1.0);
  EXPECT_EQ(t.rope.mscale, 1.0);
  EXPECT_EQ(t.rope.mscale_all_dim, 1.0);
  EXPECT_EQ(t.rope.llama_4_scaling_beta, 0.1);
  EXPECT_EQ(t.rope.llama_4_original_max_position_embeddings, 8192);
  EXPECT_EQ(m.quantization, WeightQuantization::kFp8PerTensor);
  EXPECT_TRUE(m.static_activation_scales);
  ASSERT_TRUE(m.vision.has_value());
  const VisionConfig& v = *m.vision;
  EXPECT_EQ(v.hidden_size, 1024);
  EXPECT_EQ(v.intermediate_size, 4096);
  EXPECT_EQ(v.n_layers, 24);
  EXPECT_EQ(v.n_heads, 16);
  EXPECT_EQ(v.head_dim, 64);
  EXPECT_EQ(v.num_channels, 3);
  EXPECT_EQ(v.image_size, 1540);
  EXPECT_EQ(v.patch_size, 14);
  EXPECT_EQ(v.rope_theta, 10000.0);
  EXPECT_EQ(v.spatial_merge_size, 2);
  EXPECT_EQ(v.image_token_id, 10);
  EXPECT_EQ(v.image_break_token_id, 12);
  EXPECT_EQ(v.image_end_token_id, 13);
  EXPECT_EQ(v.norm_eps, 1e-5);
}

TEST(ModelConfig, ParsesTheReleaseConfigJson) {
  const ModelConfig m = parse_hf_config(json::parse(kRealHfConfig), kOrigin);
  EXPECT_EQ(m.format, CheckpointFormat::kHuggingFace);
  EXPECT_EQ(m.architecture, "Mistral3ForConditionalGeneration");
  expect_release_values(m);
  EXPECT_FALSE(m.text.rope.apply_scale.has_value());  // config.json has no apply_scale
  EXPECT_EQ(m.vision->projector_norm_eps, 1e-6);      // transformers builds the projector norm with the text eps
  expect_same(m, preset("mistral-small-4"));
}

TEST(ModelConfig, ParsesTheReleaseParamsJson) {
  const ModelConfig m = parse_params_json(json::parse(kRealParamsJson), "ckpt/params.json");
  EXPECT_EQ(m.format, CheckpointFormat::kMistralNative);
  EXPECT_EQ(m.architecture, "mistral-native");
  expect_release_values(m);
  ASSERT_TRUE(m.text.rope.apply_scale.has_value());
  EXPECT_FALSE(*m.text.rope.apply_scale);
  EXPECT_EQ(m.vision->projector_norm_eps, 1e-5);  // Mistral's reference (MODEL.md §7.4)
}

TEST(ModelConfig, ParamsJsonDynamicActivationsAndNoVision) {
  json p = json::parse(kRealParamsJson);
  p["quantization"]["qscheme_act"] = "NO_SCALES";
  p.erase("vision_encoder");
  p.erase("llama_4_scaling");
  const ModelConfig m = parse_params_json(p, "params.json");
  EXPECT_EQ(m.quantization, WeightQuantization::kFp8PerTensor);
  EXPECT_FALSE(m.static_activation_scales);
  EXPECT_FALSE(m.vision.has_value());
  EXPECT_EQ(m.text.rope.llama_4_scaling_beta, 0.0);

  p.erase("quantization");
  p.erase("yarn");
  const ModelConfig bf16 = parse_params_json(p, "params.json");
  EXPECT_EQ(bf16.quantization, WeightQuantization::kNone);
  EXPECT_FALSE(bf16.text.rope.is_yarn);
}

TEST(ModelConfig, TransformersTinyConfigIsTheTinyPreset) {
  const ModelConfig m = parse_hf_config(json::parse(kTinyTransformersConfig), kOrigin);
  expect_same(m, preset("tiny"));
  // And the values themselves, so a change of the preset cannot hide a parser change.
  EXPECT_EQ(m.text.vocab_size, 1536);
  EXPECT_EQ(m.text.hidden_size, 64);
  EXPECT_EQ(m.text.qk_head_dim(), 48);
  EXPECT_EQ(m.text.v_head_dim, 24);
  EXPECT_EQ(m.text.rope.beta_fast, 4.0);
  EXPECT_EQ(m.text.rope.factor, 16.0);
  EXPECT_EQ(m.text.rope.original_max_position_embeddings, 64);
  EXPECT_EQ(m.text.rope.llama_4_original_max_position_embeddings, 64);
  EXPECT_EQ(m.quantization, WeightQuantization::kNone);
  ASSERT_TRUE(m.vision.has_value());
  EXPECT_EQ(m.vision->head_dim, 16);
  EXPECT_EQ(m.vision->image_size, 112);
}

TEST(ModelConfig, ParsesACausalLmConfig) {
  const ModelConfig m = parse_hf_config(json::parse(kCausalLmConfig), kOrigin);
  EXPECT_EQ(m.format, CheckpointFormat::kHuggingFace);
  EXPECT_EQ(m.architecture, "Mistral4ForCausalLM");
  EXPECT_FALSE(m.vision.has_value());
  const TextConfig& t = m.text;
  EXPECT_EQ(t.vocab_size, 1536);
  EXPECT_EQ(t.hidden_size, 64);
  EXPECT_EQ(t.n_layers, 2);
  EXPECT_EQ(t.first_k_dense_replace, 1);
  EXPECT_FALSE(t.is_moe_layer(0));
  EXPECT_TRUE(t.is_moe_layer(1));
  EXPECT_EQ(t.intermediate_size, 96);
  EXPECT_EQ(t.routed_scaling_factor, 2.5);
  EXPECT_EQ(t.rms_norm_eps, 1e-5);
  EXPECT_EQ(t.max_position_embeddings, 4096);
  EXPECT_TRUE(t.tie_word_embeddings);
  EXPECT_EQ(t.rope.theta, 1e6);
  EXPECT_EQ(t.rope.factor, 4.0);
  EXPECT_EQ(t.rope.original_max_position_embeddings, 256);
  EXPECT_EQ(t.rope.mscale, 0.707);
  EXPECT_EQ(t.rope.mscale_all_dim, 0.5);
  EXPECT_EQ(t.rope.llama_4_scaling_beta, 0.0);
  EXPECT_EQ(m.quantization, WeightQuantization::kNone);
}

TEST(ModelConfig, LegacyRopeScalingAndIntegralFloats) {
  json c = json::parse(kTinyTransformersConfig);
  json& t = c["text_config"];
  json rope = t["rope_parameters"];
  t.erase("rope_parameters");
  t["rope_theta"] = rope["rope_theta"];
  rope.erase("rope_theta");
  rope.erase("rope_type");
  rope["type"] = "yarn";
  t["rope_scaling"] = rope;
  t["hidden_size"] = 64.0;  // an integral float is an integer
  expect_same(parse_hf_config(c, kOrigin), preset("tiny"));
}

// Every variant the writers must express, for the round trips.
std::vector<std::pair<std::string, ModelConfig>> variants() {
  std::vector<std::pair<std::string, ModelConfig>> out;
  for (const std::string& name : preset_names()) out.emplace_back(name, preset(name));
  ModelConfig m = preset("tiny");
  m.vision.reset();
  out.emplace_back("tiny text-only", m);
  m = preset("tiny");
  m.quantization = WeightQuantization::kFp8PerTensor;
  m.static_activation_scales = false;
  out.emplace_back("tiny fp8 dynamic", m);
  m = preset("tiny-dense");
  m.text.tie_word_embeddings = true;
  m.text.n_shared_experts = 0;
  m.text.routed_scaling_factor = 2.5;
  m.text.rms_norm_eps = 1e-5;
  out.emplace_back("tiny-dense tied", m);
  m = preset("tiny");
  m.text.rope = RopeConfig{};
  m.text.rope.theta = 500000.0;
  out.emplace_back("tiny default rope", m);
  m = preset("mistral-small-4");
  m.quantization = WeightQuantization::kNone;
  out.emplace_back("mistral-small-4 bf16", m);
  return out;
}

TEST(ModelConfig, HfConfigRoundTripsEveryPreset) {
  for (const auto& [name, m] : variants()) {
    SCOPED_TRACE(name);
    const json written = json::parse(to_hf_config(m).dump(2));  // through text, as on disk
    const ModelConfig parsed = parse_hf_config(written, kOrigin);
    ModelConfig expected = m;
    expected.architecture = m.vision ? "Mistral3ForConditionalGeneration" : "Mistral4ForCausalLM";
    if (expected.vision) expected.vision->projector_norm_eps = m.text.rms_norm_eps;  // HF: the text eps
    expect_same(parsed, expected);
    // Writing again gives the same file.
    EXPECT_EQ(to_hf_config(parsed).dump(), to_hf_config(m).dump());
  }
}

TEST(ModelConfig, ParamsJsonRoundTripsEveryPreset) {
  for (const auto& [name, m] : variants()) {
    SCOPED_TRACE(name);
    const ModelConfig parsed = parse_params_json(json::parse(to_params_json(m).dump(2)), "params.json");
    ModelConfig expected = m;
    expected.format = CheckpointFormat::kMistralNative;
    expected.architecture = "mistral-native";
    if (expected.text.rope.is_yarn) expected.text.rope.apply_scale = m.text.rope.apply_scale.value_or(false);
    if (expected.vision) expected.vision->projector_norm_eps = 1e-5;  // the native format's own eps
    expect_same(parsed, expected);
    EXPECT_EQ(to_params_json(parsed).dump(), to_params_json(m).dump());
  }
}

TEST(ModelConfig, WritersProduceTheReleaseLayout) {
  const ModelConfig m = preset("mistral-small-4");
  const ojson hf = to_hf_config(m);
  EXPECT_EQ(hf["architectures"], ojson::array({"Mistral3ForConditionalGeneration"}));
  EXPECT_EQ(hf["model_type"], "mistral3");
  EXPECT_EQ(hf["quantization_config"]["quant_method"], "fp8");
  EXPECT_EQ(hf["quantization_config"]["activation_scheme"], "static");
  EXPECT_TRUE(hf["quantization_config"]["weight_block_size"].is_null());
  EXPECT_EQ(hf["quantization_config"]["modules_to_not_convert"],
            ojson::array({"model.vision_tower", "model.multi_modal_projector", "lm_head"}));
  EXPECT_EQ(hf["text_config"]["model_type"], "mistral4");
  EXPECT_EQ(hf["text_config"]["head_dim"], 128);
  EXPECT_EQ(hf["text_config"]["rope_parameters"]["rope_type"], "yarn");
  EXPECT_EQ(hf["text_config"]["rope_parameters"]["type"], "yarn");
  EXPECT_EQ(hf["text_config"]["rope_parameters"]["partial_rotary_factor"], 0.5);
  EXPECT_EQ(hf["vision_config"]["model_type"], "pixtral");
  EXPECT_EQ(to_hf_generation_config(m), (ojson{{"bos_token_id", 1}, {"eos_token_id", 2}, {"pad_token_id", 11}}));

  const ojson p = to_params_json(m);
  EXPECT_EQ(p["dim"], 4096);
  EXPECT_EQ(p["moe"]["num_experts"], 128);
  EXPECT_EQ(p["yarn"]["beta"], 32.0);
  EXPECT_EQ(p["yarn"]["alpha"], 1.0);
  EXPECT_EQ(p["yarn"]["apply_scale"], false);
  EXPECT_EQ(p["llama_4_scaling"]["original_max_position_embeddings"], 8192);
  EXPECT_EQ(p["quantization"]["qformat_weight"], "fp8_e4m3");
  EXPECT_EQ(p["quantization"]["qscheme_act"], "TENSOR");
  EXPECT_EQ(p["vision_encoder"]["mm_projector_id"], "patch_merge");
}

TEST(ModelConfig, PresetsAreValidAndUnknownNamesRefused) {
  for (const std::string& name : preset_names()) EXPECT_NO_THROW(preset(name).validate(name)) << name;
  EXPECT_EQ(preset("tiny-dense").text.first_k_dense_replace, 1);
  EXPECT_EQ(preset("tiny-yarn32").text.rope.beta_fast, 32.0);
  EXPECT_THROW(preset("mistral-small-3"), InvalidRequest);
}

TEST(ModelConfig, ReleaseParameterCountsAndKvBytes) {
  const ModelConfig m = preset("mistral-small-4");
  const ParamCounts c = count_params(m);
  EXPECT_EQ(c.text_total, 118'972'826'624);
  EXPECT_EQ(c.vision_total, 403'305'472 + 25'166'848);
  EXPECT_EQ(c.total(), 119'401'298'944);
  EXPECT_NEAR(static_cast<double>(c.total()) / 1e9, 119.40, 0.01);
  EXPECT_EQ(c.active_per_token, 6'632'588'288);
  EXPECT_NEAR(static_cast<double>(c.active_per_token) / 1e9, 6.63, 0.01);
  EXPECT_EQ(kv_bytes_per_token(m.text), 23'040);
  EXPECT_EQ(kv_bytes_per_token(preset("tiny").text), (32 + 32) * 2 * 2);
}

// count_params against the sum of the weight table's shapes, for every variant.
TEST(ModelConfig, ParamCountsMatchTheWeightTable) {
  for (const auto& [name, m] : variants()) {
    SCOPED_TRACE(name);
    int64_t text = 0, vision = 0, routed_expert = 0;
    for (const WeightKey& key : model_weights(m)) {
      int64_t n = 1;
      for (int64_t d : weight_shape(m, key)) n *= d;
      (key.kind >= WeightKind::kVisionPatchConv ? vision : text) += n;
      if (key.kind == WeightKind::kExpertGate || key.kind == WeightKind::kExpertUp || key.kind == WeightKind::kExpertDown) {
        routed_expert += n;
      }
    }
    const ParamCounts c = count_params(m);
    EXPECT_EQ(c.text_total, text);
    EXPECT_EQ(c.vision_total, vision);
    // Active: the whole text model (final norm included, MODEL.md §1.3) with k of the E routed experts.
    const TextConfig& t = m.text;
    EXPECT_EQ(c.active_per_token, text - routed_expert / t.n_routed_experts * (t.n_routed_experts - t.n_experts_per_tok));
  }
}

// --- Rejections: each names the file and the key.

TEST(ModelConfig, HfRejectionsNameTheKey) {
  const json tiny = json::parse(kTinyTransformersConfig);
  auto with = [&](auto&& edit) {
    json c = tiny;
    edit(c);
    return c;
  };
  struct Case {
    const char* what;
    json config;
    std::vector<std::string> pieces;
  };
  const std::vector<Case> cases = {
      {"model_type llama", with([](json& c) { c["model_type"] = "llama"; }), {"model_type", "\"llama\""}},
      {"no model_type", with([](json& c) { c.erase("model_type"); }), {"model_type"}},
      {"text model_type deepseek_v3", with([](json& c) { c["text_config"]["model_type"] = "deepseek_v3"; }),
       {"text_config.model_type", "deepseek_v3"}},
      {"vision model_type", with([](json& c) { c["vision_config"]["model_type"] = "siglip_vision_model"; }),
       {"vision_config.model_type", "siglip"}},
      {"n_group 2", with([](json& c) { c["text_config"]["n_group"] = 2; }), {"text_config.n_group"}},
      {"topk_group 2", with([](json& c) { c["text_config"]["topk_group"] = 2; }), {"text_config.topk_group"}},
      {"norm_topk_prob false", with([](json& c) { c["text_config"]["norm_topk_prob"] = false; }), {"text_config.norm_topk_prob"}},
      {"hidden_act gelu", with([](json& c) { c["text_config"]["hidden_act"] = "gelu"; }), {"text_config.hidden_act", "gelu"}},
      {"scoring_func sigmoid", with([](json& c) { c["text_config"]["scoring_func"] = "sigmoid"; }), {"text_config.scoring_func"}},
      {"attention_bias", with([](json& c) { c["text_config"]["attention_bias"] = true; }), {"text_config.attention_bias"}},
      {"rope_type linear", with([](json& c) { c["text_config"]["rope_parameters"]["rope_type"] = "linear"; }),
       {"text_config.rope_parameters.rope_type", "linear"}},
      {"rope_interleave false", with([](json& c) { c["text_config"]["rope_interleave"] = false; }), {"text_config.rope_interleave"}},
      {"attention_factor 1.48", with([](json& c) { c["text_config"]["rope_parameters"]["attention_factor"] = 1.48; }),
       {"text_config.rope_parameters.attention_factor"}},
      {"partial_rotary_factor", with([](json& c) { c["text_config"]["rope_parameters"]["partial_rotary_factor"] = 0.5; }),
       {"text_config.rope_parameters.partial_rotary_factor"}},
      {"yarn without factor", with([](json& c) { c["text_config"]["rope_parameters"].erase("factor"); }),
       {"text_config.rope_parameters.factor", "missing"}},
      {"head_dim 64", with([](json& c) { c["text_config"]["head_dim"] = 64; }), {"text_config.head_dim", "48"}},
      {"q_lora_rank null", with([](json& c) { c["text_config"]["q_lora_rank"] = nullptr; }), {"text_config.q_lora_rank"}},
      {"experts per token above experts", with([](json& c) { c["text_config"]["num_experts_per_tok"] = 9; }),
       {"num_experts_per_tok", "9"}},
      {"two shared experts", with([](json& c) { c["text_config"]["n_shared_experts"] = 2; }), {"n_shared_experts"}},
      {"negative hidden_size", with([](json& c) { c["text_config"]["hidden_size"] = -64; }), {"hidden_size", "-64"}},
      {"vocab_size 10", with([](json& c) { c["text_config"]["vocab_size"] = 10; }), {"vocab_size", "10"}},
      {"odd rope dim", with([](json& c) {
         c["text_config"]["qk_rope_head_dim"] = 31;
         c["text_config"].erase("head_dim");
         c["text_config"]["rope_parameters"].erase("partial_rotary_factor");
       }),
       {"qk_rope_head_dim"}},
      {"beta_fast below beta_slow", with([](json& c) { c["text_config"]["rope_parameters"]["beta_fast"] = 0.5; }), {"beta_fast"}},
      {"pad id outside vocab", with([](json& c) { c["text_config"]["pad_token_id"] = 1536; }), {"pad_token_id", "1536"}},
      {"quant_method gptq", with([](json& c) { c["quantization_config"] = {{"quant_method", "gptq"}}; }),
       {"quantization_config.quant_method", "gptq"}},
      {"weight_block_size", with([](json& c) {
         c["quantization_config"] = {{"quant_method", "fp8"}, {"weight_block_size", {128, 128}}};
       }),
       {"quantization_config.weight_block_size"}},
      {"activation_scheme", with([](json& c) {
         c["quantization_config"] = {{"quant_method", "fp8"}, {"activation_scheme", "per_token"}};
       }),
       {"quantization_config.activation_scheme"}},
      {"projector gelu_tanh", with([](json& c) { c["projector_hidden_act"] = "gelu_pytorch_tanh"; }), {"projector_hidden_act"}},
      {"vision_feature_layer", with([](json& c) { c["vision_feature_layer"] = -2; }), {"vision_feature_layer"}},
      {"projector bias", with([](json& c) { c["multimodal_projector_bias"] = true; }), {"multimodal_projector_bias"}},
      {"vision rope 1d", with([](json& c) { c["vision_config"]["rope_parameters"]["rope_type"] = "linear"; }),
       {"vision_config.rope_parameters.rope_type"}},
      {"vision head_dim", with([](json& c) { c["vision_config"]["head_dim"] = 8; }), {"vision.head_dim"}},
      {"spatial merge 4", with([](json& c) { c["spatial_merge_size"] = 4; }), {"spatial_merge_size"}},
      {"string for an int", with([](json& c) { c["text_config"]["hidden_size"] = "4096"; }),
       {"text_config.hidden_size", "expected an integer", "\"4096\""}},
      {"4096.5 as an int", with([](json& c) { c["text_config"]["hidden_size"] = 4096.5; }),
       {"text_config.hidden_size", "expected an integer", "4096.5"}},
      {"1e300 as an int", with([](json& c) { c["text_config"]["hidden_size"] = 1e300; }),
       {"text_config.hidden_size", "expected an integer"}},
      {"2^63 as an int", with([](json& c) { c["text_config"]["hidden_size"] = 9223372036854775808.0; }),
       {"text_config.hidden_size", "expected an integer"}},
      // An unsigned value above INT64_MAX must not wrap around to the -1 this key requires.
      {"u64 max as -1", with([](json& c) { c["vision_feature_layer"] = std::numeric_limits<uint64_t>::max(); }),
       {"vision_feature_layer", "expected an integer", "18446744073709551615"}},
      // Absurd sizes are refused before any arithmetic on them can overflow.
      {"huge nope and rope dims", with([](json& c) {
         c["text_config"]["qk_nope_head_dim"] = int64_t{1} << 62;
         c["text_config"]["qk_rope_head_dim"] = int64_t{1} << 62;
       }),
       {"head_dim"}},
      {"huge vision head_dim", with([](json& c) { c["vision_config"]["head_dim"] = int64_t{1} << 62; }), {"head_dim"}},
      {"huge vision hidden_size", with([](json& c) {
         c["vision_config"]["hidden_size"] = int64_t{1} << 62;
         c["vision_config"]["head_dim"] = int64_t{1} << 61;
       }),
       {"vision.hidden_size", "above the limit"}},
      {"huge experts", with([](json& c) {
         c["text_config"]["n_routed_experts"] = int64_t{1} << 30;
         c["text_config"]["moe_intermediate_size"] = int64_t{1} << 30;
       }),
       {"hidden_size", "parameters, above the limit of 2^53"}},
      {"huge unused dense width", with([](json& c) { c["text_config"]["intermediate_size"] = int64_t{1} << 40; }),
       {"intermediate_size", "above the limit"}},
      {"negative shared experts", with([](json& c) { c["text_config"]["n_shared_experts"] = -1; }), {"n_shared_experts"}},
      {"bool for an int", with([](json& c) { c["text_config"]["num_hidden_layers"] = true; }),
       {"text_config.num_hidden_layers", "expected an integer"}},
      {"string for a number", with([](json& c) { c["text_config"]["rms_norm_eps"] = "1e-6"; }),
       {"text_config.rms_norm_eps", "expected a number"}},
      {"string for a bool", with([](json& c) { c["text_config"]["tie_word_embeddings"] = "false"; }),
       {"text_config.tie_word_embeddings", "expected true or false"}},
      {"text_config not an object", with([](json& c) { c["text_config"] = json::array(); }), {"text_config", "expected an object"}},
      {"no text_config", with([](json& c) { c.erase("text_config"); }), {"text_config", "missing"}},
      {"root an array", json::array({1, 2}), {"expected a JSON object"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const std::string message = EXPECT_LOAD_ERROR(parse_hf_config(c.config, kOrigin), kOrigin);
    for (const std::string& piece : c.pieces) {
      EXPECT_NE(message.find(piece), std::string::npos) << "the message lacks \"" << piece << "\": " << message;
    }
  }
}

TEST(ModelConfig, ParamsJsonRejectionsNameTheKey) {
  const json real = json::parse(kRealParamsJson);
  auto with = [&](auto&& edit) {
    json p = real;
    edit(p);
    return p;
  };
  constexpr const char* origin = "ckpt/params.json";
  struct Case {
    const char* what;
    json params;
    std::vector<std::string> pieces;
  };
  const std::vector<Case> cases = {
      {"qformat_weight int4", with([](json& p) { p["quantization"]["qformat_weight"] = "int4"; }),
       {"quantization.qformat_weight", "int4"}},
      {"qscheme_act CHANNEL", with([](json& p) { p["quantization"]["qscheme_act"] = "CHANNEL"; }), {"quantization.qscheme_act"}},
      {"compressed-tensors", with([](json& p) { p["quantization_config"] = {{"quant_method", "compressed-tensors"}}; }),
       {"quantization_config"}},
      {"num_expert_groups 4", with([](json& p) { p["moe"]["num_expert_groups"] = 4; }), {"moe.num_expert_groups", "4"}},
      {"route_every_n 2", with([](json& p) { p["moe"]["route_every_n"] = 2; }), {"moe.route_every_n"}},
      {"load balancing bias", with([](json& p) { p["moe"]["use_load_balancing_bias"] = true; }), {"moe.use_load_balancing_bias"}},
      {"missing dim", with([](json& p) { p.erase("dim"); }), {"dim", "missing"}},
      {"null dim", with([](json& p) { p["dim"] = nullptr; }), {"dim", "missing"}},
      {"missing moe", with([](json& p) { p.erase("moe"); }), {"moe", "missing"}},
      {"missing moe key", with([](json& p) { p["moe"].erase("expert_hidden_dim"); }), {"moe.expert_hidden_dim", "missing"}},
      {"string for an int", with([](json& p) { p["n_layers"] = "36"; }), {"n_layers", "expected an integer"}},
      {"4096.5 as an int", with([](json& p) { p["dim"] = 4096.5; }), {"dim", "expected an integer", "4096.5"}},
      {"head_dim", with([](json& p) { p["head_dim"] = 192; }), {"head_dim", "192"}},
      {"yarn without factor", with([](json& p) { p["yarn"].erase("factor"); }), {"yarn.factor", "missing"}},
      {"apply_scale a string", with([](json& p) { p["yarn"]["apply_scale"] = "no"; }), {"yarn.apply_scale"}},
      {"llama_4_scaling without beta", with([](json& p) { p["llama_4_scaling"].erase("beta"); }), {"llama_4_scaling.beta"}},
      {"adapter_bias", with([](json& p) { p["vision_encoder"]["adapter_bias"] = true; }), {"vision_encoder.adapter_bias"}},
      {"mm_projector_id", with([](json& p) { p["vision_encoder"]["mm_projector_id"] = "mlp"; }), {"vision_encoder.mm_projector_id"}},
      {"no pre-projector norm", with([](json& p) { p["vision_encoder"]["add_pre_mm_projector_layer_norm"] = false; }),
       {"vision_encoder.add_pre_mm_projector_layer_norm"}},
      {"spatial merge 1", with([](json& p) { p["vision_encoder"].erase("spatial_merge_size"); }), {"spatial_merge_size"}},
      {"experts per token", with([](json& p) { p["moe"]["num_experts_per_tok"] = 129; }), {"num_experts_per_tok"}},
      {"vocab_size 10", with([](json& p) { p["vocab_size"] = 10; }), {"vocab_size"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const std::string message = EXPECT_LOAD_ERROR(parse_params_json(c.params, origin), origin);
    for (const std::string& piece : c.pieces) {
      EXPECT_NE(message.find(piece), std::string::npos) << "the message lacks \"" << piece << "\": " << message;
    }
  }
}

// --- load_model_config on directories.

TEST(ModelConfig, LoadPrefersNativeAndHonoursFormat) {
  TempDir dir;
  write_bytes(dir / "config.json", kTinyTransformersConfig);
  write_bytes(dir / "params.json", to_params_json(preset("tiny-yarn32")).dump(2));
  const ModelConfig native = load_model_config(dir.path());
  EXPECT_EQ(native.format, CheckpointFormat::kMistralNative);
  EXPECT_EQ(native.text.rope.beta_fast, 32.0);  // it is params.json, not config.json
  const ModelConfig asked_native = load_model_config(dir.path(), CheckpointFormat::kMistralNative);
  EXPECT_EQ(asked_native.format, CheckpointFormat::kMistralNative);
  const ModelConfig hf = load_model_config(dir.path(), CheckpointFormat::kHuggingFace);
  EXPECT_EQ(hf.format, CheckpointFormat::kHuggingFace);
  expect_same(hf, preset("tiny"));
}

TEST(ModelConfig, LoadWithOneFile) {
  TempDir hf_dir, native_dir;
  write_bytes(hf_dir / "config.json", kTinyTransformersConfig);
  EXPECT_EQ(load_model_config(hf_dir.path()).format, CheckpointFormat::kHuggingFace);
  EXPECT_LOAD_ERROR(load_model_config(hf_dir.path(), CheckpointFormat::kMistralNative), hf_dir.path().string(),
                    "no params.json");
  write_bytes(native_dir / "params.json", kRealParamsJson);
  EXPECT_EQ(load_model_config(native_dir.path()).format, CheckpointFormat::kMistralNative);
  EXPECT_LOAD_ERROR(load_model_config(native_dir.path(), CheckpointFormat::kHuggingFace), native_dir.path().string(),
                    "no config.json");
}

TEST(ModelConfig, LoadErrors) {
  TempDir dir;
  EXPECT_LOAD_ERROR(load_model_config(dir.path()), dir.path().string(), "no params.json or config.json");
  EXPECT_LOAD_ERROR(load_model_config(dir / "absent"), "absent", "no params.json or config.json");
  write_bytes(dir / "config.json", R"({"model_type": "mistral3", )");
  EXPECT_LOAD_ERROR(load_model_config(dir.path()), (dir / "config.json").string(), "not valid JSON");
  write_bytes(dir / "config.json", R"({"model_type": "llama"})");
  EXPECT_LOAD_ERROR(load_model_config(dir.path()), (dir / "config.json").string(), "model_type");
  // A broken config.json does not matter when params.json is there and wins.
  write_bytes(dir / "params.json", kRealParamsJson);
  EXPECT_EQ(load_model_config(dir.path()).format, CheckpointFormat::kMistralNative);
  EXPECT_LOAD_ERROR(read_json_file(dir / "missing.json"), "missing.json", "cannot open");
}

}  // namespace
}  // namespace quatre::io
