// Deterministic random weights for synthetic checkpoints: the value of every logical weight depends only
// on (seed, weight key), never on the format or the order of writing, so a BF16 and an FP8 checkpoint, or
// a native and an HF one, of the same seed hold the same weights. Depends on io.
#pragma once

#include <cstdint>
#include <span>

#include "io/model_config.h"
#include "io/weight_map.h"

namespace quatre::synth {

// MODEL.md §8.2: norms 1 + 0.1·N(0,1); router N(0, (2/sqrt(H))²) so routing is decisive; embeddings N(0,1);
// other linears N(0, 1/fan_in). Fills `out` (numel of weight_shape(key)) in row-major order.
void fill_weight(const io::ModelConfig& config, const io::WeightKey& key, uint64_t seed, std::span<float> out);

// The static activation scale gen-model writes for every FP8 linear: inputs up to ±8 fit E4M3's ±448.
constexpr float kSyntheticActivationScale = 8.0f / 448.0f;

}  // namespace quatre::synth
