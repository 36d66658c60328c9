// The text decoder's weights as Backend Weights, one struct per block (names follow the config keys and
// io/weight_map.h). On the CPU they are views of the checkpoint's mmapped tensors, so the Checkpoint must
// outlive them. Depends on core, io.
#pragma once

#include <optional>
#include <vector>

#include "core/backend.h"
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

struct TextWeights {
  Weight embed;       // [V, D]
  Weight final_norm;  // [D]
  Weight lm_head;     // [V, D]; the embedding when tie_word_embeddings
  std::vector<LayerWeights> layers;

  // Views every text weight of the checkpoint through backend.prepare_weight.
  static TextWeights load(const io::Checkpoint& checkpoint, Backend& backend);
};

}  // namespace quatre::model
