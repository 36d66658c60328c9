// TextModel: the Mistral Small 4 text decoder forward pass (MODEL.md §3), written once against core::Backend.
// Depends on core, io (config, weights through model/text_weights.h). Knows nothing about which backend runs it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/arena.h"
#include "core/backend.h"
#include "core/communicator.h"
#include "io/model_config.h"
#include "model/kv_cache.h"
#include "model/rope.h"
#include "model/step_inputs.h"
#include "model/text_weights.h"

namespace quatre::model {

class StepFanout;

// The attention's fp32 operands (q, and the softmax weights P) where they meet the latent cache on a backend with the
// choice (CUDA's tensor-core key pass): kFp32 exact up to summation order (three BF16 terms an operand), kBf16
// rounded to BF16 (one term: a third of the tensor-core work; vLLM's numerics, ~1e-3 relative).
enum class AttentionOperands : uint8_t { kFp32, kBf16 };
// "fp32", "bf16" or "auto" (--attention-operands, auto its default: bf16 on a CUDA device, vLLM's numerics beside
// the GPU's BF16 cache; fp32 on the CPU, the reference); else InvalidRequest naming the option.
AttentionOperands parse_attention_operands(std::string_view value, Device device);

struct TextModelOptions {
  MlaForm mla_form = MlaForm::kAbsorbed;
  SoftmaxScale softmax_scale = SoftmaxScale::kRelease;
  AttentionOperands attention_operands = AttentionOperands::kFp32;
  // One rank of a tensor/expert-parallel group: the weights are that rank's slice (TextWeights::load with its
  // ShardSpec) and forward() calls these collectives. nullptr: the whole model on one device.
  Communicator* comm = nullptr;
  // Rank 0 only: the other ranks, which forward() starts on the same step (parallel::TensorParallelGroup), so
  // that whoever drives rank 0's model (the engine, generate()) drives the whole group.
  StepFanout* followers = nullptr;
};

// The ranks 1..N-1 of a tensor-parallel group, run by rank 0's forward.
class StepFanout {
 public:
  virtual ~StepFanout() = default;
  // Starts the step on every other rank: the same inputs, each rank's own cache shaped like `kv` (the latent cache
  // is replicated: the same blocks and slots on every rank).
  virtual void begin_step(const StepInputs& in, const KvCache& kv) = 0;
  // Waits for them and rethrows the first error of a rank.
  virtual void end_step() = 0;
  // Rank 0 failed during the step: breaks the other ranks out of their collectives and waits for them. The group
  // cannot run another step.
  virtual void fail_step() = 0;
};

// Sees every named intermediate of a step (for dump-activations and golden tests). The tensor lives in the
// step's Arena (device memory on a device backend: copy it out with Backend::copy_to_host) and is only
// valid during the call. Names are stable: activation_name(layer, name), e.g. "l3.attn.c_kv"; model-level
// ones ("embed", "final_norm", "logits") have layer -1. "l{i}.out" is the hidden state after layer i.
// "l{i}.attn.q" / "l{i}.attn.k_rope" keep the rope slice interleaved (pairs 2i, 2i+1), whereas transformers'
// q_rot/k_rot come out de-interleaved ([even | odd]); the dot products, and everything downstream, agree.
class ActivationHook {
 public:
  virtual ~ActivationHook() = default;
  // `value` is scratch of the step's arena: copy what you keep before returning.
  virtual void on_activation(int layer, std::string_view name, const Tensor& value) = 0;
};
std::string activation_name(int layer, std::string_view name);

// Holds references: the weights (and the checkpoint they view) and the backend must outlive the model.
// Stateless across steps apart from the KvCache passed in, so one model may serve many caches.
class TextModel {
 public:
  // Throws LoadError for configs the forward does not support (MODEL.md §4.2: cos/sin factor must be 1), and
  // when options.comm's rank and size are not the weights' shard.
  TextModel(const io::TextConfig& config, const TextWeights& weights, Backend& backend, TextModelOptions options = {});

  // One step over the tokens of several sequences: writes every token's latent into `kv` at its slot and
  // returns logits [in.logit_rows.size(), V] (F32, in `a`). No heap allocation, no logging; the hook, when
  // given, sees each named intermediate. Sharded: every rank calls it with the same inputs and its own cache
  // (the latent cache is replicated) and gets the whole logits; "attn.q" and "attn.o" are the rank's heads.
  // Decode steps (one token a sequence, no hook, one device) go through Backend::run_step, which may replay a
  // recorded step of the same shape (CUDA graphs), with the block tables padded to a power-of-two width (on
  // every backend, recording or not). Not reentrant: one caller at a time.
  Tensor forward(const StepInputs& in, KvCache& kv, Arena& a, ActivationHook* hook = nullptr) const;

  const io::TextConfig& config() const { return cfg_; }
  const TextModelOptions& options() const { return options_; }
  float softmax_scale() const { return softmax_scale_; }
  Backend& backend() const { return be_; }

 private:
  Tensor forward_rank(const StepInputs& in, KvCache& kv, Arena& a, ActivationHook* hook) const;
  bool is_recordable(const StepInputs& in, const ActivationHook* hook) const;
  Tensor forward_recorded(const StepInputs& in, KvCache& kv, Arena& a) const;
  void layer(int layer_idx, Tensor x, const StepInputs& in, KvCache& kv, Arena& a, ActivationHook* hook) const;
  // residual (unsharded only): the output is added into it, which is returned, instead of a fresh tensor.
  Tensor attention(int layer_idx, const AttnWeights& w, const Tensor& h, const StepInputs& in, KvCache& kv, Arena& a,
                   ActivationHook* hook, const Tensor* residual) const;
  Tensor moe(int layer_idx, const MoeWeights& w, const Tensor& h, Arena& a, ActivationHook* hook,
             const Tensor* residual) const;
  // x <- Σ_ranks x when sharded (after o_proj and the FFN/MoE: each rank holds a partial sum).
  void reduce(Tensor x) const {
    if (comm_ != nullptr) comm_->all_reduce_sum(x);
  }
  void emit(ActivationHook* hook, int layer, std::string_view name, const Tensor& t) const {
    if (hook != nullptr) hook->on_activation(layer, name, t);
  }

  io::TextConfig cfg_;
  const TextWeights& weights_;
  Backend& be_;
  TextModelOptions options_;
  Communicator* comm_;  // nullptr unless sharded
  MlaDims dims_;        // n_heads: this rank's heads (H/N)
  std::vector<float> inv_freq_;  // [Dr/2]
  float softmax_scale_;
  float eps_;
  int64_t id_;  // unique over the process's models: part of a recorded step's key
  // forward_recorded's scratch: block tables padded to a power-of-two width, the step's key.
  mutable std::vector<int32_t> padded_tables_;
  mutable std::vector<int64_t> step_key_;
};

}  // namespace quatre::model
