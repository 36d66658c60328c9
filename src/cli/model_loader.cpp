// Loading a model for a command: the shared options and their meaning. Wiring only.
#include "cli/model_loader.h"

#include <optional>

#include "cli/model_dir.h"
#include "core/error.h"

namespace quatre::cli {
namespace {

std::optional<io::CheckpointFormat> parse_format(const std::string& format) {
  if (format == "hf") return io::CheckpointFormat::kHuggingFace;
  if (format == "native") return io::CheckpointFormat::kMistralNative;
  return std::nullopt;
}

Device parse_device(const std::string& device) { return device == "cuda" ? Device::kCuda : Device::kCpu; }

model::TextModelOptions model_options(const ModelOptions& o) {
  return {.mla_form = MlaForm::kAbsorbed,
          .softmax_scale = o.softmax_scale == "transformers" ? model::SoftmaxScale::kTransformers : model::SoftmaxScale::kRelease,
          .attention_operands = model::parse_attention_operands(o.attention_operands, parse_device(o.device))};
}

model::Fp8Activations fp8_activations(const ModelOptions& o, const io::Checkpoint& checkpoint) {
  return model::parse_fp8_activations(o.fp8_activations, model::has_static_activation_scales(checkpoint.config()));
}

}  // namespace

void add_model_options(CLI::App& app, ModelOptions& o) {
  app.add_option("--model", o.model_dir, "Checkpoint directory (default: ./models/default)");
  app.add_option("--format", o.format, "When the directory holds both formats: hf or native")->check(CLI::IsMember({"hf", "native"}));
  app.add_option("--device", o.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  app.add_option("--softmax-scale", o.softmax_scale,
                 "release: 1/sqrt(qk_head_dim), as the release's params.json says; transformers: times mscale^2, as "
                 "transformers 5.17 and llama.cpp do")
      ->check(CLI::IsMember({"release", "transformers"}))
      ->capture_default_str();
  app.add_option("--tensor-parallel-size", o.tensor_parallel_size,
                 "Ranks of tensor/expert parallelism, one thread each (cuda: one GPU each, through NCCL); must divide "
                 "the heads, experts, FFN widths and vocabulary")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--fp8-activations", o.fp8_activations,
                 "FP8 checkpoints: static: each linear's input is quantised to FP8 with the checkpoint's activation "
                 "scale first (W8A8, as vLLM and transformers run the release; the fast FP8 tensor-core path); none: "
                 "the fp32 input against the dequantised weight (W8A16); auto: static where the checkpoint has static "
                 "activation scales, else none")
      ->check(CLI::IsMember({"auto", "none", "static"}))
      ->capture_default_str();
  app.add_option("--attention-operands", o.attention_operands,
                 "fp32: the attention's q and softmax weights enter its products exactly (three BF16 terms on the "
                 "tensor cores); bf16: rounded to BF16, a third of the tensor-core work (vLLM's numerics, ~1e-3 "
                 "relative; the CUDA backend's BF16/FP8 cache); auto: bf16 on cuda, fp32 on cpu")
      ->check(CLI::IsMember({"auto", "fp32", "bf16"}))
      ->capture_default_str();
}

LoadedModel::LoadedModel(const ModelOptions& o)
    : dir(resolve_model_dir(o.model_dir)),
      checkpoint(io::Checkpoint::open(dir, parse_format(o.format))),
      tekken(load_model_tokenizer(dir, checkpoint.config().text.vocab_size)),
      own_backend(o.tensor_parallel_size == 1 ? make_backend(parse_device(o.device)) : nullptr),
      weights(own_backend ? std::optional<model::TextWeights>(model::TextWeights::load(
                                checkpoint, *own_backend, {}, fp8_activations(o, checkpoint)))
                          : std::nullopt),
      group(o.tensor_parallel_size == 1 ? nullptr
                                        : std::make_unique<parallel::TensorParallelGroup>(checkpoint, parse_device(o.device),
                                                                                          o.tensor_parallel_size, model_options(o),
                                                                                          fp8_activations(o, checkpoint))),
      backend(group ? &group->backend() : own_backend.get()),
      single(group ? std::nullopt : std::make_optional<model::TextModel>(checkpoint.config().text, *weights, *backend, model_options(o))),
      model(group ? group->model() : *single) {}

}  // namespace quatre::cli
