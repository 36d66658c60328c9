// `quatre inspect`: format, config summary, tensors by dtype, parameters, bytes and the GPU memory a
// deployment needs. Works on a checkpoint directory, or on a preset's config alone (--preset).
#include <cstdio>
#include <map>
#include <memory>

#include <fmt/format.h>

#include "cli/commands.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "io/model_config.h"
#include "io/weight_map.h"

namespace quatre::cli {
namespace {

struct InspectArgs {
  std::string dir;
  std::string preset;
  std::string format;
  int64_t context = 262144;
};

// 112.62 GiB, 3.40 MiB, 512 B: the largest unit that keeps the number >= 1.
std::string gib(double bytes) {
  constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (bytes >= 1024.0 && unit < 4) {
    bytes /= 1024.0;
    ++unit;
  }
  return unit == 0 ? fmt::format("{:.0f} B", bytes) : fmt::format("{:.2f} {}", bytes, kUnits[unit]);
}
// 119.40B, 6.63B, 1.23M, 512.
std::string billions(int64_t n) {
  const double v = static_cast<double>(n);
  if (v >= 1e9) return fmt::format("{:.2f}B", v / 1e9);
  if (v >= 1e6) return fmt::format("{:.2f}M", v / 1e6);
  if (v >= 1e3) return fmt::format("{:.2f}K", v / 1e3);
  return fmt::format("{}", n);
}

void print_config(const io::ModelConfig& m) {
  const io::TextConfig& t = m.text;
  fmt::print("text         {} layers ({} dense), hidden {}, {} heads, q_lora {}, kv_lora {}, qk nope {} + rope {}, v {}\n",
             t.n_layers, t.first_k_dense_replace, t.hidden_size, t.n_heads, t.q_lora_rank, t.kv_lora_rank, t.qk_nope_head_dim,
             t.qk_rope_head_dim, t.v_head_dim);
  fmt::print("moe          {} experts, top-{}, {} shared, width {}, routed scale {}\n", t.n_routed_experts, t.n_experts_per_tok,
             t.n_shared_experts, t.moe_intermediate_size, t.routed_scaling_factor);
  fmt::print("vocab        {} ids; bos {}, eos {}, pad {}; {} embeddings\n", t.vocab_size, t.bos_token_id, t.eos_token_id,
             t.pad_token_id, t.tie_word_embeddings ? "tied" : "untied");
  const io::RopeConfig& r = t.rope;
  if (r.is_yarn) {
    fmt::print("rope         yarn x{} over {} tokens, beta {}/{}, theta {}; max positions {}\n", r.factor,
               r.original_max_position_embeddings, r.beta_fast, r.beta_slow, r.theta, t.max_position_embeddings);
  } else {
    fmt::print("rope         plain, theta {}; max positions {}\n", r.theta, t.max_position_embeddings);
  }
  if (r.llama_4_scaling_beta > 0) {
    fmt::print("query temp   1 + {}*ln(1 + floor(pos/{}))\n", r.llama_4_scaling_beta, r.llama_4_original_max_position_embeddings);
  }
  if (r.apply_scale) fmt::print("softmax      yarn.apply_scale = {} (params.json)\n", *r.apply_scale);
  if (m.vision) {
    const io::VisionConfig& v = *m.vision;
    fmt::print("vision       pixtral {} layers, hidden {}, {} heads x {}, ffn {}, patch {}, max {} px\n", v.n_layers,
               v.hidden_size, v.n_heads, v.head_dim, v.intermediate_size, v.patch_size, v.image_size);
  } else {
    fmt::print("vision       none (text only)\n");
  }
  if (m.quantization == io::WeightQuantization::kInt4) {
    fmt::print("quantization quatre_int4: {} weights in 4 bits, {}, groups of {} input columns, BF16 scales; {}\n",
               io::int4_modules_name(m.int4.modules) == "all" ? "every text linear's" : "the routed experts'",
               m.int4.is_symmetric ? "symmetric" : "asymmetric (BF16 offsets)", m.int4.group_size,
               m.int4.others_fp8 ? "the other linears FP8 e4m3 per-tensor, the rest BF16" : "the rest BF16");
    return;
  }
  fmt::print("quantization {}\n", m.quantization == io::WeightQuantization::kFp8PerTensor
                                      ? (m.static_activation_scales ? "fp8 e4m3, per-tensor, static activation scales"
                                                                    : "fp8 e4m3, per-tensor, dynamic activations")
                                      : "none");
}

void print_memory(const io::ModelConfig& m, double weight_bytes, int64_t context) {
  const int64_t kv = io::kv_bytes_per_token(m.text);
  const double kv_context = static_cast<double>(kv) * static_cast<double>(context);
  fmt::print("kv cache     {:.1f} KiB per token (BF16 latent {} + rope {} per layer), {:.1f} MiB per 1K tokens\n",
             static_cast<double>(kv) / 1024.0, m.text.kv_lora_rank, m.text.qk_rope_head_dim,
             static_cast<double>(kv) * 1024.0 / double(1 << 20));
  fmt::print("gpu memory   weights {} + KV {} for one {}-token sequence = {} (plus activations)\n", gib(weight_bytes),
             gib(kv_context), context, gib(weight_bytes + kv_context));
}

void print_params(const io::ParamCounts& p) {
  fmt::print("parameters   {} total (text {}, vision {}), {} active per token\n", billions(p.total()), billions(p.text_total),
             billions(p.vision_total), billions(p.active_per_token));
}

int inspect_preset(const InspectArgs& a) {
  const io::ModelConfig m = io::preset(a.preset);
  fmt::print("preset       {} (config only, no checkpoint)\n", a.preset);
  print_config(m);
  print_params(io::count_params(m));
  // Bytes as the release stores them: FP8-eligible weights at 1 byte, the rest BF16.
  double bytes = 0;
  for (const io::WeightKey& key : io::model_weights(m)) {
    int64_t n = 1;
    for (int64_t d : io::weight_shape(m, key)) n *= d;
    const bool fp8 = m.quantization == io::WeightQuantization::kFp8PerTensor && io::may_be_fp8(key.kind);
    bytes += static_cast<double>(n) * (fp8 ? 1.0 : 2.0);
  }
  fmt::print("weights      {} ({})\n", gib(bytes), m.quantization == io::WeightQuantization::kFp8PerTensor ? "FP8 release layout" : "BF16");
  print_memory(m, bytes, a.context);
  return 0;
}

int inspect_dir(const InspectArgs& a) {
  std::optional<io::CheckpointFormat> format;
  if (a.format == "hf") format = io::CheckpointFormat::kHuggingFace;
  if (a.format == "native") format = io::CheckpointFormat::kMistralNative;
  const io::Checkpoint ckpt = io::Checkpoint::open(a.dir, format);
  const io::ModelConfig& m = ckpt.config();
  std::string naming;
  if (ckpt.hf_naming()) {
    naming = *ckpt.hf_naming() == io::HfNaming::kLegacyVlm   ? ", language_model.model.* names"
             : *ckpt.hf_naming() == io::HfNaming::kModuleVlm ? ", model.language_model.* names"
                                                             : ", model.* names";
  }
  fmt::print("checkpoint   {}\n", a.dir);
  fmt::print("format       {} ({}{})\n", io::format_name(m.format), m.architecture, naming);
  print_config(m);

  std::map<std::string, std::pair<int64_t, double>> by_dtype;  // dtype -> (tensors, bytes)
  double bytes = 0;
  for (const auto& [name, t] : ckpt.tensors()) {
    auto& [count, dtype_bytes] = by_dtype[std::string(dtype_name(t.info->dtype))];
    ++count;
    dtype_bytes += static_cast<double>(t.info->size_bytes);
    bytes += static_cast<double>(t.info->size_bytes);
  }
  std::string dtypes;
  for (const auto& [name, stats] : by_dtype) dtypes += fmt::format("{}{} {} ({})", dtypes.empty() ? "" : ", ", stats.first, name, gib(stats.second));
  fmt::print("tensors      {} in {} file(s): {}\n", ckpt.tensors().size(), ckpt.files().size(), dtypes);

  int64_t stored = 0;
  for (const auto& [key, view] : ckpt.weights()) {
    int64_t n = 1;
    for (int64_t d : view.shape) n *= d;
    stored += n;
  }
  const io::ParamCounts p = io::count_params(m);
  print_params(p);
  if (stored != p.total()) fmt::print("warning      the checkpoint stores {} weights, the config implies {}\n", stored, p.total());
  fmt::print("weights      {} on disk\n", gib(bytes));
  print_memory(m, bytes, a.context);
  return 0;
}

}  // namespace

Runner add_inspect(CLI::App& app) {
  auto a = std::make_shared<InspectArgs>();
  auto* dir = app.add_option("dir", a->dir, "Checkpoint directory (Hugging Face or Mistral-native)");
  auto* preset = app.add_option("--preset", a->preset, "Describe a preset's config instead of a checkpoint")
                     ->check(CLI::IsMember(io::preset_names()));
  dir->excludes(preset);
  app.add_option("--format", a->format, "When the directory holds both formats: hf or native (default: native)")
      ->check(CLI::IsMember({"hf", "native"}));
  app.add_option("--context", a->context, "Sequence length for the KV-cache estimate")->check(CLI::PositiveNumber)->capture_default_str();
  return [a] {
    if (!a->preset.empty()) return inspect_preset(*a);
    if (a->dir.empty()) throw InvalidRequest("inspect: give a checkpoint directory or --preset NAME");
    return inspect_dir(*a);
  };
}

}  // namespace quatre::cli
