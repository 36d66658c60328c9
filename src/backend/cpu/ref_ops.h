// Naive fp32 loops: the oracle the CPU backend's ops are tested against. Never optimised, never threaded.
// Host vectors in, host vectors out. Depends on core only.
#pragma once

#include <cstdint>
#include <vector>

#include "core/backend.h"

namespace quatre::cpu::ref {

// y [M,out] = x [M,in] · (float(w)·scale)ᵀ, one multiply-add at a time (element reads through load_as_f32).
std::vector<float> matmul(const std::vector<float>& x, int64_t M, const Weight& w);
// g ⊙ (x · 1/sqrt(mean(x²) + eps)) per row of n.
std::vector<float> rms_norm(const std::vector<float>& x, int64_t n, const Weight& g, float eps);
// down(silu(gate·x) ⊙ up·x) per row.
std::vector<float> ffn(const std::vector<float>& x, int64_t M, const FfnWeights& w);

}  // namespace quatre::cpu::ref
