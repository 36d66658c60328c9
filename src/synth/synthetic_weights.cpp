// Deterministic per-weight random streams (core/rng.h) and Box-Muller normals.
#include "synth/synthetic_weights.h"

#include <cmath>
#include <numbers>

#include "core/rng.h"

namespace quatre::synth {
namespace {

void fill_normal(Xoshiro256& rng, std::span<float> out, double mean, double std) {
  for (size_t i = 0; i < out.size(); i += 2) {
    const double u1 = 1.0 - rng.uniform(), u2 = rng.uniform();  // u1 in (0, 1]
    const double r = std::sqrt(-2.0 * std::log(u1)), phi = 2.0 * std::numbers::pi * u2;
    out[i] = static_cast<float>(mean + std * r * std::cos(phi));
    if (i + 1 < out.size()) out[i + 1] = static_cast<float>(mean + std * r * std::sin(phi));
  }
}

}  // namespace

void fill_weight(const io::ModelConfig& config, const io::WeightKey& key, uint64_t seed, std::span<float> out) {
  uint64_t s = seed;
  s ^= splitmix64(s) + static_cast<uint64_t>(key.kind) * 0x100000001B3ull;
  s ^= splitmix64(s) + static_cast<uint64_t>(static_cast<int64_t>(key.layer) + 1) * 0xC2B2AE3D27D4EB4Full;
  s ^= splitmix64(s) + static_cast<uint64_t>(static_cast<int64_t>(key.expert) + 1) * 0x165667B19E3779F9ull;
  Xoshiro256 rng(s);

  const std::vector<int64_t> shape = io::weight_shape(config, key);
  int64_t fan_in = 1;
  for (size_t i = 1; i < shape.size(); ++i) fan_in *= shape[i];
  using K = io::WeightKind;
  switch (key.kind) {
    case K::kFinalNorm: case K::kAttnNorm: case K::kFfnNorm: case K::kQANorm: case K::kKvANorm:
    case K::kVisionLnPre: case K::kVisionAttnNorm: case K::kVisionFfnNorm: case K::kProjectorNorm:
      fill_normal(rng, out, 1.0, 0.1);
      return;
    case K::kRouter:
      fill_normal(rng, out, 0.0, 2.0 / std::sqrt(static_cast<double>(config.text.hidden_size)));
      return;
    case K::kEmbed:
      fill_normal(rng, out, 0.0, 1.0);
      return;
    default:
      fill_normal(rng, out, 0.0, 1.0 / std::sqrt(static_cast<double>(fan_in)));
      return;
  }
}

}  // namespace quatre::synth
