// --random-weights: a text decoder of any config initialised directly in GPU memory (no checkpoint), with the
// release's storage: FP8 (E4M3, per-tensor scale) or BF16 linear weights, BF16 embeddings, router and norms.
// Depends on model and, in CUDA builds, backend/cuda.
#pragma once

#include <cstdint>

#include "core/backend.h"
#include "io/model_config.h"
#include "model/text_weights.h"

namespace quatre::cli {

// Weight values: uniform with std 0.02 (transformers' initializer_range) for projections and embeddings; 1 for
// norm gains. Throws InvalidRequest unless `backend` is the CUDA backend.
model::TextWeights random_text_weights(const io::TextConfig& text, Backend& backend, bool fp8, uint64_t seed);

}  // namespace quatre::cli
