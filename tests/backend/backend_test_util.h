// What the backend op tests share (CPU and CUDA): seeded normal inputs, the relative L2 error of METHOD.md, host
// F32 tensor views, and weights built on the host: stored in a float dtype (values rounded to it) or quantised to
// quatre's 4-bit format (core/int4.h). Header-only; depends on core and GoogleTest.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <random>
#include <span>
#include <vector>

#include <gtest/gtest.h>

#include "core/backend.h"
#include "core/dtype.h"
#include "core/int4.h"

namespace quatre::backend_test {

inline std::vector<float> randn(size_t n, uint64_t seed, float stddev = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// ‖got − want‖ / ‖want‖ in double; infinity when got holds a non-finite value.
inline double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    num += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    den += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

inline Tensor host_tensor(std::vector<float>& v, std::initializer_list<int64_t> shape) {
  return Tensor(v.data(), DType::F32, shape);
}
inline std::vector<float> to_vector(const Tensor& t) { return {t.data_as<float>(), t.data_as<float>() + t.numel()}; }

// A weight stored in `dtype` (F32, BF16, F16 or FP8 E4M3 with `scale`; values rounded to it), owning its bytes.
struct StoredWeight {
  StoredWeight(const std::vector<float>& values, std::vector<int64_t> shape, DType dtype, float scale = 1.0f) {
    bytes.resize(values.size() * dtype_size(dtype));
    for (size_t i = 0; i < values.size(); ++i) {
      switch (dtype) {
        case DType::F32: std::memcpy(&bytes[i * 4], &values[i], 4); break;
        case DType::BF16: { const uint16_t b = f32_to_bf16(values[i]); std::memcpy(&bytes[i * 2], &b, 2); break; }
        case DType::F16: { const uint16_t b = f32_to_f16(values[i]); std::memcpy(&bytes[i * 2], &b, 2); break; }
        case DType::F8_E4M3: bytes[i] = static_cast<std::byte>(f32_to_fp8e4m3(values[i] / scale)); break;
        default: ADD_FAILURE() << "not a weight dtype";
      }
    }
    weight.w = Tensor(bytes.data(), dtype, std::span<const int64_t>(shape));
    weight.weight_scale = dtype == DType::F8_E4M3 ? scale : 1.0f;
  }
  std::vector<std::byte> bytes;
  Weight weight;
};

// A host [out, in] weight of normal values quantised to 4 bits by core/int4.h's quantiser, owning its bytes.
struct Int4Host {
  Int4Host(int64_t out, int64_t in, int64_t group_size, bool is_symmetric, uint64_t seed, float stddev = 0.1f)
      : codes(static_cast<size_t>(out * in / 2)), scales(static_cast<size_t>(out * in / group_size)), offsets(scales.size()) {
    const std::vector<float> values = randn(static_cast<size_t>(out * in), seed, stddev);
    const int64_t n_groups = in / group_size;
    for (int64_t o = 0; o < out; ++o) {
      quantize_int4_row(values.data() + o * in, in, {group_size, is_symmetric}, codes.data() + o * in / 2,
                        scales.data() + o * n_groups, offsets.data() + o * n_groups);
    }
    weight.w = Tensor(codes.data(), DType::U8, {out, in / 2});
    weight.int4 = Int4Weight{.scales = Tensor(scales.data(), DType::BF16, {out, n_groups}),
                             .offsets = is_symmetric ? Tensor() : Tensor(offsets.data(), DType::BF16, {out, n_groups}),
                             .group_size = group_size};
  }
  std::vector<uint8_t> codes;
  std::vector<uint16_t> scales, offsets;
  Weight weight;
};

// The gate, up and down weights of n experts (D -> F -> D) as host weights that own their bytes (StoredWeight or
// Int4Host), made by make(out, in, seed) with seeds 100 + 3e, +1, +2; and the same as FfnWeights.
template <typename Stored>
struct ExpertWeights {
  template <typename Make>
  ExpertWeights(int n, int64_t D, int64_t F, Make make) {
    stored.reserve(static_cast<size_t>(3 * n));
    for (int e = 0; e < n; ++e) {
      const auto seed = static_cast<uint64_t>(100 + 3 * e);
      stored.push_back(make(F, D, seed));
      stored.push_back(make(F, D, seed + 1));
      stored.push_back(make(D, F, seed + 2));
    }
    for (size_t e = 0; e < stored.size(); e += 3) ffn.push_back({stored[e].weight, stored[e + 1].weight, stored[e + 2].weight});
  }
  // The experts prepared for `be` (a device backend copies them).
  std::vector<FfnWeights> on(Backend& be) const {
    std::vector<FfnWeights> out;
    for (const FfnWeights& f : ffn) out.push_back({be.prepare_weight(f.gate), be.prepare_weight(f.up), be.prepare_weight(f.down)});
    return out;
  }
  std::vector<Stored> stored;
  std::vector<FfnWeights> ffn;
};

}  // namespace quatre::backend_test
