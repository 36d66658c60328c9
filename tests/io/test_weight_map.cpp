// io/weight_map: the checkpoint-name table against the names and shapes transformers 5.17 writes for the tiny
// model (57 tensors as a VLM, 33 as Mistral4ForCausalLM), the native names of MODEL.md §2.2, the FP8 scale
// tensors of both formats, and detect_hf_naming.
#include "io/weight_map.h"

#include <map>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "core/error.h"
#include "io/model_config.h"
#include "io_test_util.h"

namespace quatre::io {
namespace {

using Shape = std::vector<int64_t>;
using Names = std::map<std::string, Shape>;

// Tiny dims: H 64, V 1536, dq 48, dkv 32, dn 16, dr 32, dv 24, nh 4, E 8, I 32, Hv 32, Iv 64, P 14, M 2.
constexpr int64_t H = 64, V = 1536, E = 8, I = 32, Hv = 32, Iv = 64;

Names to_map(const std::vector<CheckpointTensor>& layout) {
  Names out;
  for (const CheckpointTensor& t : layout) {
    EXPECT_TRUE(out.emplace(t.name, t.shape).second) << "listed twice: " << t.name;
  }
  return out;
}

// The text tensors transformers writes for the tiny model, MoE layers, written out by hand.
Names tiny_text_names(const std::string& model, const std::string& lm_head) {
  Names n;
  n[model + "embed_tokens.weight"] = {V, H};
  n[model + "norm.weight"] = {H};
  n[lm_head] = {V, H};
  for (int l = 0; l < 2; ++l) {
    const std::string p = model + "layers." + std::to_string(l) + ".";
    n[p + "input_layernorm.weight"] = {H};
    n[p + "post_attention_layernorm.weight"] = {H};
    n[p + "self_attn.q_a_proj.weight"] = {48, H};
    n[p + "self_attn.q_a_layernorm.weight"] = {48};
    n[p + "self_attn.q_b_proj.weight"] = {4 * 48, 48};
    n[p + "self_attn.kv_a_proj_with_mqa.weight"] = {32 + 32, H};
    n[p + "self_attn.kv_a_layernorm.weight"] = {32};
    n[p + "self_attn.kv_b_proj.weight"] = {4 * (16 + 24), 32};
    n[p + "self_attn.o_proj.weight"] = {H, 4 * 24};
    n[p + "mlp.gate.weight"] = {E, H};
    n[p + "mlp.experts.gate_up_proj"] = {E, 2 * I, H};
    n[p + "mlp.experts.down_proj"] = {E, H, I};
    n[p + "mlp.shared_experts.gate_proj.weight"] = {I, H};
    n[p + "mlp.shared_experts.up_proj.weight"] = {I, H};
    n[p + "mlp.shared_experts.down_proj.weight"] = {H, I};
  }
  return n;
}

Names tiny_vision_names(const std::string& tower, const std::string& projector) {
  Names n;
  n[projector + "norm.weight"] = {Hv};
  n[projector + "patch_merger.merging_layer.weight"] = {Hv, Hv * 4};
  n[projector + "linear_1.weight"] = {H, Hv};
  n[projector + "linear_2.weight"] = {H, H};
  n[tower + "patch_conv.weight"] = {Hv, 3, 14, 14};
  n[tower + "ln_pre.weight"] = {Hv};
  for (int j = 0; j < 2; ++j) {
    const std::string p = tower + "transformer.layers." + std::to_string(j) + ".";
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "o_proj"}) n[p + "attention." + proj + ".weight"] = {Hv, Hv};
    n[p + "attention_norm.weight"] = {Hv};
    n[p + "ffn_norm.weight"] = {Hv};
    n[p + "feed_forward.gate_proj.weight"] = {Iv, Hv};
    n[p + "feed_forward.up_proj.weight"] = {Iv, Hv};
    n[p + "feed_forward.down_proj.weight"] = {Hv, Iv};
  }
  return n;
}

Names merged(Names a, const Names& b) {
  a.insert(b.begin(), b.end());
  return a;
}

ModelConfig tiny_text_only() {
  ModelConfig m = preset("tiny");
  m.vision.reset();
  return m;
}

std::vector<CheckpointTensor> hf_layout(const ModelConfig& m, HfNaming naming, bool fp8 = false, bool act = true) {
  return checkpoint_layout(m, {.format = CheckpointFormat::kHuggingFace, .hf_naming = naming, .fp8 = fp8,
                               .static_activation_scales = act});
}

std::vector<CheckpointTensor> native_layout(const ModelConfig& m, bool fp8 = false, bool act = true) {
  return checkpoint_layout(m, {.format = CheckpointFormat::kMistralNative, .fp8 = fp8, .static_activation_scales = act});
}

const CheckpointTensor& find(const std::vector<CheckpointTensor>& layout, const std::string& name) {
  for (const CheckpointTensor& t : layout) {
    if (t.name == name) return t;
  }
  ADD_FAILURE() << "no tensor " << name;
  static const CheckpointTensor none;
  return none;
}

TEST(WeightMap, TinyLegacyVlmLayoutIsWhatTransformersWrites) {
  const auto layout = hf_layout(preset("tiny"), HfNaming::kLegacyVlm);
  const Names expected = merged(tiny_text_names("language_model.model.", "language_model.lm_head.weight"),
                                tiny_vision_names("vision_tower.", "multi_modal_projector."));
  ASSERT_EQ(expected.size(), 57u);
  EXPECT_EQ(layout.size(), 57u);
  EXPECT_EQ(to_map(layout), expected);
  for (const CheckpointTensor& t : layout) EXPECT_EQ(t.role, TensorRole::kWeight) << t.name;
}

TEST(WeightMap, TinyModuleVlmLayout) {
  const auto layout = hf_layout(preset("tiny"), HfNaming::kModuleVlm);
  EXPECT_EQ(to_map(layout), merged(tiny_text_names("model.language_model.", "lm_head.weight"),
                                   tiny_vision_names("model.vision_tower.", "model.multi_modal_projector.")));
}

TEST(WeightMap, TinyCausalLmLayoutHas33Tensors) {
  const auto layout = hf_layout(tiny_text_only(), HfNaming::kCausalLm);
  const Names expected = tiny_text_names("model.", "lm_head.weight");
  ASSERT_EQ(expected.size(), 33u);
  EXPECT_EQ(to_map(layout), expected);
}

TEST(WeightMap, TiedEmbeddingsHaveNoLmHead) {
  ModelConfig m = tiny_text_only();
  m.text.tie_word_embeddings = true;
  const Names names = to_map(hf_layout(m, HfNaming::kCausalLm));
  EXPECT_EQ(names.size(), 32u);
  EXPECT_FALSE(names.contains("lm_head.weight"));
  EXPECT_FALSE(to_map(native_layout(m)).contains("output.weight"));
}

TEST(WeightMap, StackedExpertPiecesAndVisionRowOrder) {
  const auto layout = hf_layout(preset("tiny"), HfNaming::kLegacyVlm);
  const CheckpointTensor& gate_up = find(layout, "language_model.model.layers.1.mlp.experts.gate_up_proj");
  ASSERT_EQ(gate_up.pieces.size(), 2u * E);
  for (int e = 0; e < E; ++e) {
    const TensorPiece& gate = gate_up.pieces[2 * static_cast<size_t>(e)];
    const TensorPiece& up = gate_up.pieces[2 * static_cast<size_t>(e) + 1];
    EXPECT_EQ(gate.key, (WeightKey{WeightKind::kExpertGate, 1, e}));
    EXPECT_EQ(gate.stack, e);
    EXPECT_EQ(gate.row_begin, 0);
    EXPECT_EQ(gate.rows, I);
    EXPECT_EQ(up.key, (WeightKey{WeightKind::kExpertUp, 1, e}));
    EXPECT_EQ(up.stack, e);
    EXPECT_EQ(up.row_begin, I);
    EXPECT_EQ(up.rows, I);
  }
  const CheckpointTensor& down = find(layout, "language_model.model.layers.0.mlp.experts.down_proj");
  ASSERT_EQ(down.pieces.size(), static_cast<size_t>(E));
  EXPECT_EQ(down.pieces[3].key, (WeightKey{WeightKind::kExpertDown, 0, 3}));
  EXPECT_EQ(down.pieces[3].stack, 3);
  EXPECT_EQ(down.pieces[3].rows, H);

  const CheckpointTensor& q_b = find(layout, "language_model.model.layers.0.self_attn.q_b_proj.weight");
  ASSERT_EQ(q_b.pieces.size(), 1u);
  EXPECT_EQ(q_b.pieces[0].key, (WeightKey{WeightKind::kQB, 0}));
  EXPECT_EQ(q_b.pieces[0].stack, -1);
  EXPECT_EQ(q_b.pieces[0].rows, 4 * 48);

  // HF de-interleaves vision q/k rows (MODEL.md §2.5); nothing else is permuted, text q/k included.
  for (const CheckpointTensor& t : layout) {
    const bool vision_qk = t.name.find("attention.q_proj") != std::string::npos || t.name.find("attention.k_proj") != std::string::npos;
    EXPECT_EQ(t.row_order, vision_qk ? RowOrder::kHfVisionQk : RowOrder::kNative) << t.name;
  }
  for (const CheckpointTensor& t : native_layout(preset("tiny"))) EXPECT_EQ(t.row_order, RowOrder::kNative) << t.name;
}

// The native names of MODEL.md §2.2, every kind, written out by hand.
Names tiny_native_names() {
  Names n;
  n["tok_embeddings.weight"] = {V, H};
  n["norm.weight"] = {H};
  n["output.weight"] = {V, H};
  for (int l = 0; l < 2; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    n[p + "attention_norm.weight"] = {H};
    n[p + "attention.wq_a.weight"] = {48, H};
    n[p + "attention.q_a_norm.weight"] = {48};
    n[p + "attention.wq_b.weight"] = {4 * 48, 48};
    n[p + "attention.wkv_a_with_mqa.weight"] = {64, H};
    n[p + "attention.kv_a_norm.weight"] = {32};
    n[p + "attention.wkv_b.weight"] = {4 * 40, 32};
    n[p + "attention.wo.weight"] = {H, 4 * 24};
    n[p + "ffn_norm.weight"] = {H};
    n[p + "gate.weight"] = {E, H};
    for (int e = 0; e < E; ++e) {
      const std::string x = p + "experts." + std::to_string(e) + ".";
      n[x + "w1.weight"] = {I, H};
      n[x + "w3.weight"] = {I, H};
      n[x + "w2.weight"] = {H, I};
    }
    n[p + "shared_experts.w1.weight"] = {I, H};
    n[p + "shared_experts.w3.weight"] = {I, H};
    n[p + "shared_experts.w2.weight"] = {H, I};
  }
  n["vision_encoder.patch_conv.weight"] = {Hv, 3, 14, 14};
  n["vision_encoder.ln_pre.weight"] = {Hv};
  for (int j = 0; j < 2; ++j) {
    const std::string p = "vision_encoder.transformer.layers." + std::to_string(j) + ".";
    for (const char* w : {"wq", "wk", "wv", "wo"}) n[p + "attention." + w + ".weight"] = {Hv, Hv};
    n[p + "attention_norm.weight"] = {Hv};
    n[p + "ffn_norm.weight"] = {Hv};
    n[p + "feed_forward.w1.weight"] = {Iv, Hv};
    n[p + "feed_forward.w3.weight"] = {Iv, Hv};
    n[p + "feed_forward.w2.weight"] = {Hv, Iv};
  }
  n["pre_mm_projector_norm.weight"] = {Hv};
  n["patch_merger.merging_layer.weight"] = {Hv, Hv * 4};
  n["vision_language_adapter.w_in.weight"] = {H, Hv};
  n["vision_language_adapter.w_out.weight"] = {H, H};
  return n;
}

TEST(WeightMap, TinyNativeLayoutHasEveryKindUnderItsNativeName) {
  const auto layout = native_layout(preset("tiny"));
  const Names expected = tiny_native_names();
  EXPECT_EQ(expected.size(), 3u + 2 * (10 + 3 * E + 3) + 2 + 2 * 9 + 4);
  EXPECT_EQ(to_map(layout), expected);
  // One piece each, the whole logical weight, and the key the name says.
  const CheckpointTensor& w1 = find(layout, "layers.1.experts.5.w1.weight");
  ASSERT_EQ(w1.pieces.size(), 1u);
  EXPECT_EQ(w1.pieces[0].key, (WeightKey{WeightKind::kExpertGate, 1, 5}));
  EXPECT_EQ(w1.pieces[0].stack, -1);
  EXPECT_EQ(w1.pieces[0].rows, I);
  EXPECT_EQ(find(layout, "layers.0.experts.7.w2.weight").pieces[0].key, (WeightKey{WeightKind::kExpertDown, 0, 7}));
  EXPECT_EQ(find(layout, "layers.0.experts.2.w3.weight").pieces[0].key, (WeightKey{WeightKind::kExpertUp, 0, 2}));
  EXPECT_EQ(find(layout, "vision_encoder.transformer.layers.1.attention.wq.weight").pieces[0].key,
            (WeightKey{WeightKind::kVisionQ, 1}));
  EXPECT_EQ(find(layout, "pre_mm_projector_norm.weight").pieces[0].key, (WeightKey{WeightKind::kProjectorNorm}));
}

TEST(WeightMap, RealModelNativeShapes) {
  const auto layout = native_layout(preset("mistral-small-4"));
  // MODEL.md §2.2's table.
  const Names spot = {
      {"tok_embeddings.weight", {131072, 4096}},
      {"output.weight", {131072, 4096}},
      {"layers.35.attention.wq_a.weight", {1024, 4096}},
      {"layers.35.attention.wq_b.weight", {4096, 1024}},
      {"layers.0.attention.wkv_a_with_mqa.weight", {320, 4096}},
      {"layers.0.attention.wkv_b.weight", {6144, 256}},
      {"layers.0.attention.wo.weight", {4096, 4096}},
      {"layers.0.gate.weight", {128, 4096}},
      {"layers.0.experts.127.w1.weight", {2048, 4096}},
      {"layers.0.experts.127.w2.weight", {4096, 2048}},
      {"layers.0.shared_experts.w3.weight", {2048, 4096}},
      {"vision_encoder.patch_conv.weight", {1024, 3, 14, 14}},
      {"vision_encoder.transformer.layers.23.attention.wk.weight", {1024, 1024}},
      {"vision_encoder.transformer.layers.23.feed_forward.w2.weight", {1024, 4096}},
      {"patch_merger.merging_layer.weight", {1024, 4096}},
      {"vision_language_adapter.w_in.weight", {4096, 1024}},
      {"vision_language_adapter.w_out.weight", {4096, 4096}},
  };
  const Names names = to_map(layout);
  for (const auto& [name, shape] : spot) {
    ASSERT_TRUE(names.contains(name)) << name;
    EXPECT_EQ(names.at(name), shape) << name;
  }
  EXPECT_FALSE(names.contains("layers.36.gate.weight"));
  EXPECT_FALSE(names.contains("layers.0.experts.128.w1.weight"));
  EXPECT_EQ(layout.size(), 3u + 36 * (10 + 3 * 128 + 3) + 2 + 24 * 9 + 4);
}

TEST(WeightMap, DenseLayersUseTheFeedForwardNames) {
  const ModelConfig m = preset("tiny-dense");
  const Names hf = to_map(hf_layout(m, HfNaming::kLegacyVlm));
  const std::string p0 = "language_model.model.layers.0.", p1 = "language_model.model.layers.1.";
  EXPECT_EQ(hf.at(p0 + "mlp.gate_proj.weight"), (Shape{96, H}));
  EXPECT_EQ(hf.at(p0 + "mlp.up_proj.weight"), (Shape{96, H}));
  EXPECT_EQ(hf.at(p0 + "mlp.down_proj.weight"), (Shape{H, 96}));
  EXPECT_FALSE(hf.contains(p0 + "mlp.gate.weight"));
  EXPECT_FALSE(hf.contains(p0 + "mlp.experts.gate_up_proj"));
  EXPECT_FALSE(hf.contains(p0 + "mlp.shared_experts.gate_proj.weight"));
  EXPECT_TRUE(hf.contains(p1 + "mlp.experts.gate_up_proj"));
  EXPECT_FALSE(hf.contains(p1 + "mlp.gate_proj.weight"));
  EXPECT_EQ(hf.size(), 57u - 3);  // layer 0: 3 dense linears instead of the router, 2 stacked experts and 3 shared

  const Names native = to_map(native_layout(m));
  EXPECT_EQ(native.at("layers.0.feed_forward.w1.weight"), (Shape{96, H}));
  EXPECT_EQ(native.at("layers.0.feed_forward.w3.weight"), (Shape{96, H}));
  EXPECT_EQ(native.at("layers.0.feed_forward.w2.weight"), (Shape{H, 96}));
  EXPECT_FALSE(native.contains("layers.0.gate.weight"));
  EXPECT_FALSE(native.contains("layers.0.experts.0.w1.weight"));
  EXPECT_TRUE(native.contains("layers.1.experts.0.w1.weight"));
}

// --- FP8: scale tensors as transformers 5.17 and the native release name them.

TEST(WeightMap, HfFp8ScalesAreNamedAsTransformersExpects) {
  const ModelConfig m = preset("tiny");
  const auto layout = hf_layout(m, HfNaming::kLegacyVlm, /*fp8=*/true);
  const Names names = to_map(layout);
  const Names weights = to_map(hf_layout(m, HfNaming::kLegacyVlm));
  Names expected_scales;
  for (int l = 0; l < 2; ++l) {
    const std::string p = "language_model.model.layers." + std::to_string(l) + ".";
    for (const char* linear : {"self_attn.q_a_proj", "self_attn.q_b_proj", "self_attn.kv_a_proj_with_mqa", "self_attn.kv_b_proj",
                               "self_attn.o_proj", "mlp.shared_experts.gate_proj", "mlp.shared_experts.up_proj",
                               "mlp.shared_experts.down_proj"}) {
      expected_scales[p + linear + ".weight_scale_inv"] = {};
      expected_scales[p + linear + ".activation_scale"] = {};
    }
    expected_scales[p + "mlp.experts.gate_up_proj_scale_inv"] = {E, 2, 1};
    expected_scales[p + "mlp.experts.down_proj_scale_inv"] = {E, 1, 1};
    expected_scales[p + "mlp.experts.gate_up_proj_activation_scale"] = {E};
    expected_scales[p + "mlp.experts.down_proj_activation_scale"] = {E};
  }
  EXPECT_EQ(names, merged(weights, expected_scales));

  for (const CheckpointTensor& t : layout) {
    if (t.name.ends_with("_scale_inv")) EXPECT_EQ(t.role, TensorRole::kWeightScale) << t.name;
    else if (t.name.ends_with("activation_scale")) EXPECT_EQ(t.role, TensorRole::kActivationScale) << t.name;
    else EXPECT_EQ(t.role, TensorRole::kWeight) << t.name;
  }
  // gate_up_proj_scale_inv [E,2,1]: element [e,0] scales the gate rows, [e,1] the up rows.
  const CheckpointTensor& s = find(layout, "language_model.model.layers.0.mlp.experts.gate_up_proj_scale_inv");
  ASSERT_EQ(s.pieces.size(), 2u * E);
  for (int e = 0; e < E; ++e) {
    EXPECT_EQ(s.pieces[2 * static_cast<size_t>(e)].key, (WeightKey{WeightKind::kExpertGate, 0, e}));
    EXPECT_EQ(s.pieces[2 * static_cast<size_t>(e) + 1].key, (WeightKey{WeightKind::kExpertUp, 0, e}));
  }
  const CheckpointTensor& o = find(layout, "language_model.model.layers.1.self_attn.o_proj.weight_scale_inv");
  ASSERT_EQ(o.pieces.size(), 1u);
  EXPECT_EQ(o.pieces[0].key, (WeightKey{WeightKind::kO, 1}));

  // Dynamic activations: weight scales only.
  const Names dynamic = to_map(hf_layout(m, HfNaming::kLegacyVlm, /*fp8=*/true, /*act=*/false));
  EXPECT_EQ(dynamic.size(), weights.size() + 2 * (8 + 2));
  for (const auto& [name, shape] : dynamic) EXPECT_FALSE(name.ends_with("activation_scale")) << name;
}

TEST(WeightMap, NativeFp8ScalesAreQscales) {
  const ModelConfig m = preset("tiny");
  const auto layout = native_layout(m, /*fp8=*/true);
  const Names names = to_map(layout);
  const Names weights = tiny_native_names();
  size_t scales = 0;
  for (const auto& [name, shape] : weights) {
    const std::string stem = name.substr(0, name.size() - std::string(".weight").size());
    const bool fp8 = (name.starts_with("layers.") && name.find("attention.w") != std::string::npos) ||
                     name.find("experts.") != std::string::npos;
    EXPECT_EQ(names.contains(stem + ".qscale_weight"), fp8) << name;
    EXPECT_EQ(names.contains(stem + ".qscale_act"), fp8) << name;
    if (fp8) {
      EXPECT_EQ(names.at(stem + ".qscale_weight"), Shape{}) << name;
      scales += 2;
    }
  }
  EXPECT_EQ(scales, 2u * 2 * (5 + 3 * E + 3));
  EXPECT_EQ(names.size(), weights.size() + scales);
  EXPECT_TRUE(names.contains("layers.1.experts.7.w2.qscale_act"));
  EXPECT_TRUE(names.contains("layers.0.shared_experts.w1.qscale_weight"));
  EXPECT_FALSE(names.contains("layers.0.gate.qscale_weight"));
  EXPECT_FALSE(names.contains("output.qscale_weight"));
  EXPECT_FALSE(names.contains("vision_encoder.transformer.layers.0.attention.wq.qscale_weight"));
}

TEST(WeightMap, Fp8EligibilityFollowsMODEL_6_3) {
  for (WeightKind k : {WeightKind::kQA, WeightKind::kQB, WeightKind::kKvA, WeightKind::kKvB, WeightKind::kO, WeightKind::kExpertGate,
                       WeightKind::kExpertUp, WeightKind::kExpertDown, WeightKind::kSharedGate, WeightKind::kSharedUp,
                       WeightKind::kSharedDown, WeightKind::kDenseGate, WeightKind::kDenseUp, WeightKind::kDenseDown}) {
    EXPECT_TRUE(may_be_fp8(k)) << static_cast<int>(k);
  }
  for (WeightKind k : {WeightKind::kEmbed, WeightKind::kFinalNorm, WeightKind::kLmHead, WeightKind::kAttnNorm, WeightKind::kFfnNorm,
                       WeightKind::kQANorm, WeightKind::kKvANorm, WeightKind::kRouter, WeightKind::kVisionPatchConv,
                       WeightKind::kVisionLnPre, WeightKind::kVisionAttnNorm, WeightKind::kVisionFfnNorm, WeightKind::kVisionQ,
                       WeightKind::kVisionK, WeightKind::kVisionV, WeightKind::kVisionO, WeightKind::kVisionGate,
                       WeightKind::kVisionUp, WeightKind::kVisionDown, WeightKind::kProjectorNorm, WeightKind::kPatchMerger,
                       WeightKind::kProjectorIn, WeightKind::kProjectorOut}) {
    EXPECT_FALSE(may_be_fp8(k)) << static_cast<int>(k);
  }
}

TEST(WeightMap, ModelWeightsAreUniqueWithStableNames) {
  const ModelConfig m = preset("tiny");
  const std::vector<WeightKey> keys = model_weights(m);
  EXPECT_EQ(keys.size(), tiny_native_names().size());
  std::set<WeightKey> unique(keys.begin(), keys.end());
  EXPECT_EQ(unique.size(), keys.size());
  std::set<std::string> names;
  for (const WeightKey& k : keys) EXPECT_TRUE(names.insert(weight_key_name(k)).second) << weight_key_name(k);
  EXPECT_EQ(weight_key_name({WeightKind::kEmbed}), "embed");
  EXPECT_EQ(weight_key_name({WeightKind::kExpertGate, 3, 5}), "l3.experts.5.gate");
  EXPECT_EQ(weight_key_name({WeightKind::kVisionQ, 1}), "v1.attn.q");
  EXPECT_EQ(weight_key_name({WeightKind::kQB, 0}), "l0.attn.q_b");
  EXPECT_EQ(weight_shape(m, {WeightKind::kVisionPatchConv}), (Shape{Hv, 3, 14, 14}));
  EXPECT_EQ(weight_shape(m, {WeightKind::kKvB, 1}), (Shape{160, 32}));
}

TEST(WeightMap, DetectHfNaming) {
  EXPECT_EQ(detect_hf_naming({"vision_tower.ln_pre.weight", "language_model.model.embed_tokens.weight"}, "d"), HfNaming::kLegacyVlm);
  EXPECT_EQ(detect_hf_naming({"model.language_model.embed_tokens.weight", "lm_head.weight"}, "d"), HfNaming::kModuleVlm);
  EXPECT_EQ(detect_hf_naming({"lm_head.weight", "model.embed_tokens.weight"}, "d"), HfNaming::kCausalLm);
  // Every layout the table writes is detected as itself.
  for (HfNaming n : {HfNaming::kLegacyVlm, HfNaming::kModuleVlm}) {
    std::vector<std::string> names;
    for (const CheckpointTensor& t : hf_layout(preset("tiny"), n, true)) names.push_back(t.name);
    EXPECT_EQ(detect_hf_naming(names, "d"), n);
  }
  std::vector<std::string> causal;
  for (const CheckpointTensor& t : hf_layout(tiny_text_only(), HfNaming::kCausalLm)) causal.push_back(t.name);
  EXPECT_EQ(detect_hf_naming(causal, "d"), HfNaming::kCausalLm);

  EXPECT_LOAD_ERROR(detect_hf_naming({"tok_embeddings.weight", "output.weight"}, "ckpt/dir"), "ckpt/dir", "no token embedding");
  EXPECT_LOAD_ERROR(detect_hf_naming({}, "ckpt/dir"), "ckpt/dir");
  EXPECT_LOAD_ERROR(detect_hf_naming({"language_model.embed_tokens.weight"}, "ckpt/dir"), "ckpt/dir");
}

}  // namespace
}  // namespace quatre::io
