// quatre's 4-bit weight format: the dequantisation rule and the round-to-nearest quantiser (core/int4.h).
#include "core/int4.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/check.h"
#include "core/dtype.h"

namespace quatre {
namespace {

float bf16_bits_to_f32(uint16_t bits) {
  const uint32_t wide = uint32_t{bits} << 16;
  float v;
  std::memcpy(&v, &wide, 4);
  return v;
}

void put_code(uint8_t* codes, int64_t i, int code) {
  uint8_t& byte = codes[i / 2];
  const int shift = static_cast<int>(i % 2) * 4;
  byte = static_cast<uint8_t>((byte & ~(0xF << shift)) | ((code & 0xF) << shift));
}

}  // namespace

float int4_value(uint8_t code, uint16_t scale_bits, uint16_t offset_bits, bool is_symmetric) {
  const float s = bf16_bits_to_f32(scale_bits);
  if (is_symmetric) return s * static_cast<float>(static_cast<int>(code) - kInt4SymmetricZero);
  return s * static_cast<float>(code) + bf16_bits_to_f32(offset_bits);
}

void dequantize_int4_row(const uint8_t* codes, const uint16_t* scales, const uint16_t* offsets, int64_t n,
                         int64_t group_size, float* out) {
  const bool is_symmetric = offsets == nullptr;
  for (int64_t g = 0; g * group_size < n; ++g) {
    const float s = bf16_bits_to_f32(scales[g]);
    const float m = is_symmetric ? 0.0f : bf16_bits_to_f32(offsets[g]);
    const int64_t begin = g * group_size;
    for (int64_t i = begin; i < begin + group_size; i += 2) {
      const uint8_t byte = codes[i / 2];
      const int lo = byte & 0xF, hi = byte >> 4;
      if (is_symmetric) {
        out[i] = s * static_cast<float>(lo - kInt4SymmetricZero);
        out[i + 1] = s * static_cast<float>(hi - kInt4SymmetricZero);
      } else {
        out[i] = s * static_cast<float>(lo) + m;
        out[i + 1] = s * static_cast<float>(hi) + m;
      }
    }
  }
}

void quantize_int4_row(const float* w, int64_t n, const Int4Layout& layout, uint8_t* codes, uint16_t* scales,
                       uint16_t* offsets) {
  const int64_t G = layout.group_size;
  CHECK(G > 0 && G % 2 == 0 && n % G == 0) << "int4 row of " << n << " values in groups of " << G;
  CHECK(layout.is_symmetric || offsets != nullptr) << "asymmetric int4 needs offsets";
  for (int64_t g = 0; g < n / G; ++g) {
    const float* x = w + g * G;
    float lo = x[0], hi = x[0], amax = 0.0f;
    for (int64_t i = 0; i < G; ++i) {
      CHECK(std::isfinite(x[i])) << "int4: non-finite weight " << x[i] << " at column " << g * G + i;
      lo = std::min(lo, x[i]);
      hi = std::max(hi, x[i]);
      amax = std::max(amax, std::fabs(x[i]));
    }
    if (layout.is_symmetric) {
      scales[g] = f32_to_bf16(amax / 7.0f);
      const float s = bf16_bits_to_f32(scales[g]);
      for (int64_t i = 0; i < G; ++i) {
        const float q = s > 0.0f ? std::clamp(std::nearbyint(x[i] / s), -8.0f, 7.0f) : 0.0f;
        put_code(codes, g * G + i, static_cast<int>(q) + kInt4SymmetricZero);
      }
    } else {
      offsets[g] = f32_to_bf16(lo);
      const float m = bf16_bits_to_f32(offsets[g]);
      scales[g] = f32_to_bf16((hi - m) / 15.0f);
      const float s = bf16_bits_to_f32(scales[g]);
      for (int64_t i = 0; i < G; ++i) {
        const float q = s > 0.0f ? std::clamp(std::nearbyint((x[i] - m) / s), 0.0f, 15.0f) : 0.0f;
        put_code(codes, g * G + i, static_cast<int>(q));
      }
    }
  }
}

void round_q8_blocks(float* x, int64_t n) {
  constexpr float kRound = 12582912.0f;  // 1.5·2^23: fma(x, inv, kRound) - kRound is x·inv rounded to nearest even
  for (int64_t b = 0; b < n; b += kQ8Block) {
    const int64_t end = std::min(n, b + kQ8Block);
    float amax = 0.0f;
    for (int64_t j = b; j < end; ++j) amax = std::isnan(x[j]) || std::isnan(amax) ? NAN : std::max(amax, std::fabs(x[j]));
    // Below 127 times the smallest normal float 127 / a would overflow: such a block is zeros.
    const float d = amax / 127.0f, inv = amax >= kQ8MinBlockMax ? 127.0f / amax : 0.0f;
    for (int64_t j = b; j < end; ++j) x[j] = (std::fma(x[j], inv, kRound) - kRound) * d;
  }
}

void round_int4_activations(float* x, int64_t n, Int4Activations mode) {
  switch (mode) {
    case Int4Activations::kFp32: return;
    case Int4Activations::kBf16:
      for (int64_t i = 0; i < n; ++i) x[i] = bf16_to_f32(f32_to_bf16(x[i]));
      return;
    case Int4Activations::kQ8: round_q8_blocks(x, n); return;
  }
}

}  // namespace quatre
