// Deterministic per-weight random streams (SplitMix64 seeding, xoshiro256**, Box-Muller normals).
#include "synth/synthetic_weights.h"

#include <cmath>
#include <numbers>

namespace quatre::synth {
namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// xoshiro256**: small, fast, and the same on every platform (unlike std::normal_distribution).
class Rng {
 public:
  explicit Rng(uint64_t seed) {
    for (uint64_t& s : s_) s = splitmix64(seed);
  }
  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

void fill_normal(Rng& rng, std::span<float> out, double mean, double std) {
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
  Rng rng(s);

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
