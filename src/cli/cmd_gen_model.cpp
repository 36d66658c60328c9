// `quatre gen-model`: writes a synthetic Mistral Small 4 checkpoint (wiring only; the work is in synth/).
#include <cstdio>
#include <memory>

#include <fmt/format.h>

#include "cli/commands.h"
#include "core/error.h"
#include "io/model_config.h"
#include "synth/gen_model.h"

namespace quatre::cli {
namespace {

struct GenModelArgs {
  std::string out_dir;
  std::string preset = "tiny";
  std::string format = "hf";
  std::string dtype = "bf16";
  std::string hf_naming;
  uint64_t seed = 0;
  int64_t layers = 0;
  int64_t experts = 0;
  int64_t vision_layers = -1;
  bool text_only = false;
  double shard_gib = 5.0;
  std::string tokenizer;
};

int run_gen_model(const GenModelArgs& a) {
  synth::GenModelOptions o;
  o.config = io::preset(a.preset);
  if (a.layers > 0) o.config.text.n_layers = a.layers;
  if (a.experts > 0) {
    o.config.text.n_routed_experts = a.experts;
    o.config.text.n_experts_per_tok = std::min(o.config.text.n_experts_per_tok, a.experts);
  }
  if (a.text_only) o.config.vision.reset();
  if (a.vision_layers >= 0 && o.config.vision) o.config.vision->n_layers = a.vision_layers;
  o.format = a.format == "native" ? io::CheckpointFormat::kMistralNative : io::CheckpointFormat::kHuggingFace;
  o.fp8 = a.dtype == "fp8";
  if (a.hf_naming == "legacy") o.hf_naming = io::HfNaming::kLegacyVlm;
  if (a.hf_naming == "module") o.hf_naming = io::HfNaming::kModuleVlm;
  if (a.hf_naming == "causal-lm") o.hf_naming = io::HfNaming::kCausalLm;
  o.seed = a.seed;
  if (!(a.shard_gib > 0)) throw InvalidRequest(fmt::format("--shard-size-gib must be positive, got {}", a.shard_gib));
  o.max_shard_bytes = static_cast<uint64_t>(a.shard_gib * static_cast<double>(1ull << 30));
  if (!a.tokenizer.empty()) o.tokenizer = a.tokenizer;
  o.progress = [](const std::string& line) { std::printf("gen-model: %s\n", line.c_str()); };
  synth::generate_checkpoint(o, a.out_dir);
  std::printf("gen-model: %s checkpoint (%s, %s, seed %llu) written to %s\n", a.preset.c_str(),
              std::string(io::format_name(o.format)).c_str(), a.dtype.c_str(), static_cast<unsigned long long>(a.seed),
              a.out_dir.c_str());
  return 0;
}

}  // namespace

Runner add_gen_model(CLI::App& app) {
  auto a = std::make_shared<GenModelArgs>();
  app.add_option("out_dir", a->out_dir, "Directory to write (created; must be empty)")->required();
  app.add_option("--preset", a->preset, "Architecture: mistral-small-4, tiny, tiny-dense, tiny-yarn32")
      ->check(CLI::IsMember(io::preset_names()))
      ->capture_default_str();
  app.add_option("--format", a->format, "hf (config.json, model-*.safetensors) or native (params.json, consolidated*)")
      ->check(CLI::IsMember({"hf", "native"}))
      ->capture_default_str();
  app.add_option("--dtype", a->dtype, "bf16, or fp8 (E4M3 with per-tensor scales, like the release)")
      ->check(CLI::IsMember({"bf16", "fp8"}))
      ->capture_default_str();
  app.add_option("--seed", a->seed, "Seed: the same seed gives the same weights in every format and dtype")->capture_default_str();
  app.add_option("--layers", a->layers, "Override the number of text layers (full width, fewer layers)")->check(CLI::PositiveNumber);
  app.add_option("--experts", a->experts, "Override the number of routed experts")->check(CLI::PositiveNumber);
  app.add_option("--vision-layers", a->vision_layers, "Override the number of vision layers")->check(CLI::NonNegativeNumber);
  app.add_flag("--text-only", a->text_only, "No vision tower (HF: Mistral4ForCausalLM)");
  app.add_option("--hf-naming", a->hf_naming, "HF tensor prefixes: legacy (language_model.model.*, default with vision), "
                                               "module (model.language_model.*), causal-lm (model.*, default text-only)")
      ->check(CLI::IsMember({"legacy", "module", "causal-lm"}));
  app.add_option("--shard-size-gib", a->shard_gib, "Largest shard in GiB")->capture_default_str();
  app.add_option("--tokenizer", a->tokenizer, "Copy this tekken.json instead of writing a synthetic one")->check(CLI::ExistingFile);
  return [a] { return run_gen_model(*a); };
}

}  // namespace quatre::cli
