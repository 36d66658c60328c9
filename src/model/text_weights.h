// The text decoder's weights as Backend Weights, one struct per block (names follow the config keys and
// io/weight_map.h). On the CPU they are views of the checkpoint's mmapped tensors, so the Checkpoint must
// outlive them. Depends on core, io.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "core/backend.h"
#include "core/communicator.h"
#include "io/checkpoint.h"

namespace quatre::model {

struct AttnWeights {
  Weight q_a;        // [q_lora_rank, D]
  Weight q_a_norm;   // [q_lora_rank]
  Weight q_b;        // [H*(Dn+Dr), q_lora_rank]
  Weight kv_a;       // [R+Dr, D]
  Weight kv_a_norm;  // [R]
  Weight kv_b;       // [H*(Dn+Dv), R]
  Weight o;          // [D, H*Dv]
};

struct MoeWeights {
  Weight router;                      // [E, D]
  std::vector<FfnWeights> experts;    // [E]
  std::optional<FfnWeights> shared;   // width moe_intermediate_size * n_shared_experts
};

struct LayerWeights {
  Weight attn_norm, ffn_norm;  // [D]
  AttnWeights attn;
  std::optional<MoeWeights> moe;     // layers >= first_k_dense_replace
  std::optional<FfnWeights> dense;   // layers < first_k_dense_replace
};

// What an FP8 linear does with its fp32 input (MODEL.md §6.2; README, "FP8 activations").
enum class Fp8Activations : uint8_t {
  kNone,    // W8A16: the input as is against the dequantised weight (the transformers goldens' semantics)
  kStatic,  // W8A8: the input quantised with the checkpoint's static activation scale, as vLLM and transformers'
            // FineGrainedFP8 run the release. Not kv_b, which the attention absorbs (W8A16 there, as in vLLM); gate
            // and up of an FFN share max(a_gate, a_up), as the fused gate_up of the HF experts and of vLLM do.
};

// "none", "static" or "auto" (the --fp8-activations option, auto its default): auto is static where the checkpoint's
// FP8 linears carry static activation scales (static_scales: has_static_activation_scales; the release, run W8A8 as
// vLLM and transformers run it), else none. Anything else is an InvalidRequest naming the option.
Fp8Activations parse_fp8_activations(std::string_view value, bool static_scales);
// Whether a checkpoint of `config` has FP8 linears with static activation scales (activation_scheme "static"): the
// FP8 release, or a 4-bit one whose other linears are FP8 (`quatre quantize` of the release).
bool has_static_activation_scales(const io::ModelConfig& config);

// Tensor/expert parallelism (README, "Several GPUs"): rank r of N holds
//   q_b, kv_b            rows of its H/N heads        o       its H/N heads' columns [D, H/N*Dv]
//   shared / dense FFN   gate, up: rows [F/N, D]      down    columns [D, F/N]
//   routed experts       its E/N experts [first, first + E/N) (expert parallelism)
//   lm_head              its vocabulary rows [V/N, D] (the logits are gathered)
// and everything else whole (embedding, norms, q_a, kv_a, router): the latent cache is replicated.
struct TextWeights {
  Weight embed;       // [V, D]
  Weight final_norm;  // [D]
  Weight lm_head;     // [V, D]; the embedding when tie_word_embeddings. Sharded: [V/N, D]
  std::vector<LayerWeights> layers;
  ShardSpec shard;           // which slice this is; {0, 1}: the whole model
  ExpertShard experts;       // the routed experts of `layers[l].moe->experts`, by global id
  // Host copies of column slices (o, down), which are not contiguous in the checkpoint; the CPU backend reads
  // them in place.
  std::vector<std::shared_ptr<std::vector<std::byte>>> slices;

  // Views every text weight of the checkpoint through backend.prepare_weight; with shard.size > 1, only the
  // rank's slice. Throws LoadError naming the config key when shard.size does not divide a split dimension, or
  // when kStatic is asked of an FP8 checkpoint without static activation scales. Weight::activation_scale is set
  // only where `fp8` is kStatic (backends apply it wherever it is set).
  static TextWeights load(const io::Checkpoint& checkpoint, Backend& backend, ShardSpec shard = {},
                          Fp8Activations fp8 = Fp8Activations::kNone);
};

}  // namespace quatre::model
