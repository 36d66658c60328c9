// --random-weights: a text decoder of any config initialised directly in GPU memory (no checkpoint), with the
// storage of a release or of `quatre quantize`: FP8 (E4M3, per-tensor scale), BF16 or 4-bit routed experts, and
// the stored bytes per parameter the benchmarks' rooflines count. Depends on model and, in CUDA builds, backend/cuda.
#pragma once

#include <cstdint>
#include <string_view>

#include "core/backend.h"
#include "io/model_config.h"
#include "model/text_weights.h"
#include "vision/vision_model.h"

namespace quatre::cli {

// The linear weights of --random-weights (--dtype of bench and bench_serve):
//   fp8:  every text linear FP8 E4M3 with a per-tensor scale (the release checkpoint);
//   bf16: every text linear BF16;
//   int4: what `quatre quantize` writes by default from the FP8 release: the routed experts symmetric 4-bit in
//         groups of kRandomInt4GroupSize columns (core/int4.h), every other linear FP8 as stored.
// Embeddings, lm_head, the router and the norms are BF16 in all three.
enum class RandomDType : uint8_t { kFp8, kBf16, kInt4 };
inline constexpr int64_t kRandomInt4GroupSize = 128;
inline constexpr std::string_view kRandomDTypeNames = "fp8, bf16 or int4";

// "fp8", "bf16", "int4"; anything else is an InvalidRequest naming `who` (the command) and the choices.
RandomDType parse_random_dtype(std::string_view name, std::string_view who);

// Stored bytes per parameter of the text linears, 4-bit scales and offsets included (0.5 + 2/G symmetric).
struct LinearBytes {
  double experts = 2;  // the routed experts
  double other = 2;    // attention (q_a, q_b, kv_a, kv_b, o), the shared and dense FFNs
};
LinearBytes linear_bytes(RandomDType dtype);
// Of a checkpoint: FP8 per tensor, quatre_int4 (its group size, symmetry and modules) or BF16.
LinearBytes linear_bytes(const io::ModelConfig& config);

// The text config of --random-weights: `preset`'s (io::preset), cut to its first `layers` layers when layers > 0
// (the leading dense layers cut with it).
io::TextConfig random_weights_config(std::string_view preset, int64_t layers);

// Weight values: uniform with std 0.02 (transformers' initializer_range) for projections and embeddings (4-bit:
// codes uniform in 1..15 with the BF16 scale that gives std 0.02); 1 for norm gains. Throws InvalidRequest unless
// `backend` is the CUDA backend, or for int4 when the group size does not divide hidden_size and
// moe_intermediate_size. fp8 kStatic: the FP8 linears but kv_b carry a static activation scale of 8/448 (W8A8).
model::TextWeights random_text_weights(const io::TextConfig& text, Backend& backend, RandomDType dtype, uint64_t seed,
                                       model::Fp8Activations fp8 = model::Fp8Activations::kNone);

// The vision tower and projector of `vision` for a text model of width text_hidden (quatre bench --vision), drawn
// on the CUDA backend as the release stores them: BF16 linears of std 0.02, norm gains 1, native q/k rows.
vision::VisionWeights random_vision_weights(const io::VisionConfig& vision, int64_t text_hidden, Backend& backend,
                                            uint64_t seed);

}  // namespace quatre::cli
