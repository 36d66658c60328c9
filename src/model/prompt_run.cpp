// run_prompt: a fresh cache, one StepBuilder chunk, a hook that copies the hidden states out. Depends on core, io.
#include "model/prompt_run.h"

#include <fmt/format.h>

#include "core/error.h"

namespace quatre::model {
namespace {

class HiddenCapture final : public ActivationHook {
 public:
  HiddenCapture(Backend& backend, PromptRun& out) : backend_(backend), out_(out) {}
  void on_activation(int layer, std::string_view name, const Tensor& value) override {
    const bool wanted = (layer < 0 && (name == "embed" || name == "final_norm")) || (layer >= 0 && name == "out");
    if (!wanted) return;
    std::vector<float> host(static_cast<size_t>(value.numel()));
    backend_.copy_to_host(value, host.data());
    if (name == "final_norm") {
      out_.final_norm = std::move(host);
    } else {
      out_.hidden.push_back(std::move(host));
    }
  }

 private:
  Backend& backend_;
  PromptRun& out_;
};

}  // namespace

PromptRun run_prompt(const TextModel& model, std::span<const int32_t> ids, const PromptRunOptions& options) {
  const auto T = static_cast<int64_t>(ids.size());
  if (T == 0) throw InvalidRequest("run_prompt: empty prompt");
  constexpr int64_t kBlockSize = 16;
  KvCache kv(model.config(), model.backend(), {.n_blocks = (T + kBlockSize - 1) / kBlockSize, .block_size = kBlockSize});
  const std::vector<int32_t> table = kv.allocate(kv.n_blocks());
  StepBuilder step(kBlockSize);
  step.add({.block_table = table, .ids = ids, .positions = options.positions},
           options.logit_rows.empty() ? LogitRows::kAll : LogitRows::kNone);
  StepInputs in = step.inputs();
  for (int32_t row : options.logit_rows) {
    if (row < 0 || row >= T) throw InvalidRequest(fmt::format("run_prompt: logit row {} of {} tokens", row, T));
  }
  if (!options.logit_rows.empty()) in.logit_rows = options.logit_rows;
  in.image_rows = options.image_rows;
  in.image_embeddings = options.image_embeddings;

  PromptRun out;
  out.n_tokens = T;
  HiddenCapture capture(model.backend(), out);
  Arena arena(model.backend().memory());
  const Tensor logits = model.forward(in, kv, arena, options.capture_hidden ? &capture : nullptr);
  out.logits.resize(static_cast<size_t>(logits.numel()));
  model.backend().copy_to_host(logits, out.logits.data());
  return out;
}

}  // namespace quatre::model
