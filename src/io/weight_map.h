// The one table from checkpoint tensor names (both formats, MODEL.md §2.2 and §2.4) to the model's weight
// slots. gen-model writes checkpoints from it and the loader reads them with it, so grepping a checkpoint
// name finds this file. Depends on core and io/model_config.
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <vector>

#include "io/model_config.h"

namespace quatre::io {

// A logical weight of the model, independent of how a checkpoint stores it.
enum class WeightKind : uint8_t {
  // text, model level
  kEmbed, kFinalNorm, kLmHead,
  // text, per layer
  kAttnNorm, kFfnNorm, kQA, kQANorm, kQB, kKvA, kKvANorm, kKvB, kO,
  kRouter, kExpertGate, kExpertUp, kExpertDown, kSharedGate, kSharedUp, kSharedDown,
  kDenseGate, kDenseUp, kDenseDown,
  // vision tower, model level and per layer
  kVisionPatchConv, kVisionLnPre,
  kVisionAttnNorm, kVisionFfnNorm, kVisionQ, kVisionK, kVisionV, kVisionO, kVisionGate, kVisionUp, kVisionDown,
  // projector
  kProjectorNorm, kPatchMerger, kProjectorIn, kProjectorOut,
};

struct WeightKey {
  WeightKind kind;
  int32_t layer = -1;   // text or vision layer; -1 for model-level weights
  int32_t expert = -1;  // routed expert; -1 otherwise
  auto operator<=>(const WeightKey&) const = default;
};

// Stable activation-style name, e.g. "l3.experts.5.gate", "v1.attn.q", "embed".
std::string weight_key_name(const WeightKey& key);
// Logical shape [out, in] for linears (patch_conv: [Hv, C, P, P]; norms: [n]).
std::vector<int64_t> weight_shape(const ModelConfig& config, const WeightKey& key);
// Whether a checkpoint may store this weight in FP8 (the text stack's linears; MODEL.md §6.3).
bool may_be_fp8(WeightKind kind);
// Whether a checkpoint of this config stores the weight in 4 bits (config.quantization == kInt4 and the weight is
// one of config.int4.modules).
bool is_int4_weight(const ModelConfig& config, WeightKind kind);
// Every logical weight the config has, in a stable order.
std::vector<WeightKey> model_weights(const ModelConfig& config);

// How the tensor names of a Hugging Face checkpoint are prefixed (MODEL.md §2.4).
enum class HfNaming {
  kLegacyVlm,    // language_model.model.*, language_model.lm_head.*, vision_tower.*, multi_modal_projector.*
  kModuleVlm,    // model.language_model.*, lm_head.*, model.vision_tower.*, model.multi_modal_projector.*
  kCausalLm,     // model.*, lm_head.* (Mistral4ForCausalLM)
};

// Rows of one logical weight inside a checkpoint tensor: tensor[stack][row_begin : row_begin + rows].
struct TensorPiece {
  WeightKey key;
  int64_t stack = -1;  // index along a leading expert dimension, -1 for unstacked tensors
  int64_t row_begin = 0;
  int64_t rows = 0;
};

enum class TensorRole : uint8_t {
  kWeight, kWeightScale, kActivationScale,  // FP8: per-tensor (or per-expert) scales
  kInt4Scales, kInt4Offsets,                // 4-bit: [..., rows, in/group_size] BF16 (core/int4.h)
};

// Row order of a vision q/k weight relative to the native (interleaved-RoPE) order (MODEL.md §2.5).
enum class RowOrder : uint8_t { kNative, kHfVisionQk };

// One tensor a checkpoint of a given format holds.
struct CheckpointTensor {
  std::string name;
  TensorRole role = TensorRole::kWeight;
  std::vector<int64_t> shape;        // weights: exact; scales: the shape gen-model writes (readers accept any numel-compatible one)
  std::vector<TensorPiece> pieces;   // weights: the logical weights it holds; scales: the weights it scales, in element order
  RowOrder row_order = RowOrder::kNative;
};

struct LayoutOptions {
  CheckpointFormat format = CheckpointFormat::kHuggingFace;
  HfNaming hf_naming = HfNaming::kLegacyVlm;  // HF only
  bool fp8 = false;                           // include the FP8 scale tensors of the FP8-eligible weights
  bool static_activation_scales = true;       // FP8: include activation scales
};

// The tensors a checkpoint of this config holds in the given layout: the table itself. A 4-bit weight (is_int4_weight)
// is U8 with its last dimension halved (two codes a byte), followed by its scales (name: the weight's stem +
// ".scales", or the stacked tensor's name + "_scales") and, when asymmetric, its offsets (".offsets", "_offsets").
std::vector<CheckpointTensor> checkpoint_layout(const ModelConfig& config, const LayoutOptions& options);

// Picks the HF naming a set of tensor names uses (by the prefix of the embedding), or throws LoadError.
HfNaming detect_hf_naming(const std::vector<std::string>& tensor_names, std::string_view origin);

}  // namespace quatre::io
