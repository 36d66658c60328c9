// ModelConfig: the one validated description of a Mistral Small 4 checkpoint, read from either format
// (Hugging Face config.json or Mistral-native params.json, MODEL.md §2), written back to either, and the
// presets gen-model builds. Depends on core.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace quatre::io {

enum class CheckpointFormat { kHuggingFace, kMistralNative };
std::string_view format_name(CheckpointFormat f);  // "huggingface" / "mistral-native"

// Rotary embedding of the text decoder: interleaved pairs on the qk_rope_head_dim slice, YaRN
// frequencies (MODEL.md §4) and the Llama-4 query temperature (§0.3).
struct RopeConfig {
  double theta = 10000.0;
  bool is_yarn = false;          // rope_type "yarn"; otherwise plain RoPE and the fields below are unused
  double factor = 1.0;
  int64_t original_max_position_embeddings = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 1.0;
  // params.json yarn.apply_scale: whether the release applies mscale^2 to the softmax scale (§4.3).
  // Absent in config.json, where transformers 5.17 always applies it.
  std::optional<bool> apply_scale;
  double llama_4_scaling_beta = 0.0;  // 0 disables the query temperature
  int64_t llama_4_original_max_position_embeddings = 0;
};

struct TextConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t q_lora_rank = 0;
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  int64_t n_routed_experts = 0;
  int64_t n_experts_per_tok = 0;
  int64_t n_shared_experts = 0;
  int64_t moe_intermediate_size = 0;
  int64_t intermediate_size = 0;        // dense FFN width, used only by the first_k_dense_replace layers
  int64_t first_k_dense_replace = 0;
  double routed_scaling_factor = 1.0;
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;
  int64_t pad_token_id = 11;
  RopeConfig rope;

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool is_moe_layer(int64_t layer) const { return layer >= first_k_dense_replace; }
};

// Pixtral encoder + patch merger + projector (MODEL.md §1.2, §7).
struct VisionConfig {
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t head_dim = 0;
  int64_t num_channels = 3;
  int64_t image_size = 0;  // max side in pixels, also the 2-D RoPE table size
  int64_t patch_size = 0;
  double rope_theta = 10000.0;
  int64_t spatial_merge_size = 2;
  int64_t image_token_id = 10;
  int64_t image_break_token_id = 12;
  int64_t image_end_token_id = 13;
  double norm_eps = 1e-5;           // inside the tower
  double projector_norm_eps = 1e-6; // the pre-projector RMSNorm (HF uses the text eps)
};

enum class WeightQuantization { kNone, kFp8PerTensor, kInt4 };

// Which text linears a quatre_int4 checkpoint stores in 4 bits (core/int4.h); the other linears stay BF16, or FP8 as
// the FP8 release stores them (Int4Config::others_fp8), and the norms, the router, the embedding, lm_head and the
// vision tower stay BF16.
enum class Int4Modules : uint8_t {
  kExperts,  // the routed experts (gate, up, down): ~95% of Mistral Small 4's parameters
  kAll,      // every text linear: attention (q_a, q_b, kv_a, kv_b, o), routed, shared and dense FFNs
};
std::string_view int4_modules_name(Int4Modules m);  // "experts" / "all"

// config.json / params.json "quantization_config": {"quant_method": "quatre_int4", "bits": 4, "group_size": G,
// "symmetric": true, "modules": "experts", "scale_dtype": "bfloat16", "other_linears": "bfloat16"}; with
// "other_linears": "float8_e4m3fn" the FP8-eligible linears not in 4 bits are FP8 with per-tensor scales, as in the
// FP8 release (its "activation_scheme", "static" or "dynamic", beside it).
struct Int4Config {
  int64_t group_size = 128;
  bool is_symmetric = true;
  Int4Modules modules = Int4Modules::kExperts;
  bool others_fp8 = false;
};

struct ModelConfig {
  CheckpointFormat format = CheckpointFormat::kHuggingFace;
  // "Mistral3ForConditionalGeneration" (text + vision) or "Mistral4ForCausalLM" (text only) for HF;
  // informational for native checkpoints.
  std::string architecture;
  TextConfig text;
  std::optional<VisionConfig> vision;
  WeightQuantization quantization = WeightQuantization::kNone;
  bool static_activation_scales = true;  // FP8: "static" (qscale_act present) vs "dynamic"
  Int4Config int4;                       // quantization == kInt4

  // Checks every value this engine relies on. Throws LoadError naming `origin` and the key.
  void validate(std::string_view origin) const;
};

// Parsers. `origin` names the file in error messages; unsupported values throw LoadError naming the key.
ModelConfig parse_hf_config(const nlohmann::json& config, std::string_view origin);
ModelConfig parse_params_json(const nlohmann::json& params, std::string_view origin);
// Reads DIR/params.json or DIR/config.json (or the one `format` asks for). When both exist and no
// format is given, the Mistral-native one wins (the release ships both; the native files keep the
// original per-expert FP8 scales).
ModelConfig load_model_config(const std::filesystem::path& dir, std::optional<CheckpointFormat> format = {});
nlohmann::json read_json_file(const std::filesystem::path& path);  // LoadError naming the file

// Writers: the config file of each format, with every key spelled out.
nlohmann::ordered_json to_hf_config(const ModelConfig& config);
nlohmann::ordered_json to_params_json(const ModelConfig& config);
nlohmann::ordered_json to_hf_generation_config(const ModelConfig& config);

// Named configurations: "mistral-small-4" (the real model), "tiny" (every code path, seconds to run),
// "tiny-dense" (tiny with one dense layer), "tiny-yarn32" (tiny with the real beta_fast).
std::vector<std::string> preset_names();
ModelConfig preset(std::string_view name);  // InvalidRequest for an unknown name

// Parameter counts from the config alone (MODEL.md §1.3).
struct ParamCounts {
  int64_t text_total = 0;
  int64_t vision_total = 0;  // tower + merger + projector
  int64_t active_per_token = 0;  // attention, norms (final one too), router, k routed + shared experts, lm_head, embedding table
  int64_t total() const { return text_total + vision_total; }
};
ParamCounts count_params(const ModelConfig& config);
// BF16 latent KV cache bytes per token: (kv_lora_rank + qk_rope_head_dim) * 2 * n_layers.
int64_t kv_bytes_per_token(const TextConfig& text);

}  // namespace quatre::io
