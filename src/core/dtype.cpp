// Element types and exact scalar conversions. Depends on the standard library only.
#include "core/dtype.h"

#include <array>
#include <bit>
#include <cmath>
#include <cstring>

#include "core/check.h"

namespace quatre {
namespace {

struct DTypeInfo {
  DType type;
  std::string_view name;
  size_t size;
  bool is_float;
};

constexpr std::array<DTypeInfo, 7> kDTypes = {{
    {DType::F32, "F32", 4, true},
    {DType::F16, "F16", 2, true},
    {DType::BF16, "BF16", 2, true},
    {DType::F8_E4M3, "F8_E4M3", 1, true},
    {DType::I32, "I32", 4, false},
    {DType::I64, "I64", 8, false},
    {DType::U8, "U8", 1, false},
}};

const DTypeInfo& info(DType t) {
  for (const DTypeInfo& d : kDTypes) {
    if (d.type == t) return d;
  }
  CHECK(false) << "unknown DType " << static_cast<int>(t);
  return kDTypes[0];
}

// Float8 e4m3fn decode table, built once: bias 7, subnormals m/8 * 2^-6, 0x7F/0xFF NaN.
std::array<float, 256> make_fp8_table() {
  std::array<float, 256> table{};
  for (int b = 0; b < 256; ++b) {
    const int sign = b >> 7, exponent = (b >> 3) & 0xF, mantissa = b & 7;
    float v;
    if (exponent == 0xF && mantissa == 7) {
      v = std::nanf("");
    } else if (exponent == 0) {
      v = std::ldexp(static_cast<float>(mantissa) / 8.0f, -6);
    } else {
      v = std::ldexp(1.0f + static_cast<float>(mantissa) / 8.0f, exponent - 7);
    }
    table[b] = sign ? -v : v;
  }
  return table;
}

}  // namespace

size_t dtype_size(DType t) { return info(t).size; }
std::string_view dtype_name(DType t) { return info(t).name; }
bool is_float(DType t) { return info(t).is_float; }

std::optional<DType> parse_dtype(std::string_view name) {
  for (const DTypeInfo& d : kDTypes) {
    if (d.name == name) return d.type;
  }
  return std::nullopt;
}

float bf16_to_f32(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

uint16_t f32_to_bf16(float value) {
  const uint32_t u = std::bit_cast<uint32_t>(value);
  if (std::isnan(value)) return static_cast<uint16_t>((u >> 16) | 0x40);  // keep sign, force quiet NaN
  const uint32_t rounding_bias = 0x7FFF + ((u >> 16) & 1);
  return static_cast<uint16_t>((u + rounding_bias) >> 16);
}

float f16_to_f32(uint16_t bits) {
  const uint32_t sign = (bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1F;
  const uint32_t mantissa = bits & 0x3FF;
  if (exponent == 0) {
    const float v = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -v : v;
  }
  if (exponent == 0x1F) return std::bit_cast<float>(sign | 0x7F800000u | (mantissa << 13));
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

uint16_t f32_to_f16(float value) {
  const uint32_t u = std::bit_cast<uint32_t>(value);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000);
  if (std::isnan(value)) return sign | 0x7E00;
  const float a = std::fabs(value);
  if (a >= 65520.0f) return sign | 0x7C00;  // rounds to infinity
  if (a < std::ldexp(1.0f, -14)) {          // subnormal half: multiples of 2^-24, round half to even
    const float scaled = a * 16777216.0f;   // a / 2^-24
    return sign | static_cast<uint16_t>(std::nearbyint(scaled));
  }
  const uint32_t au = std::bit_cast<uint32_t>(a);
  const uint32_t rounded = au + 0xFFF + ((au >> 13) & 1);  // round mantissa to 10 bits, ties to even
  const uint32_t exponent = (rounded >> 23) - 112;
  return sign | static_cast<uint16_t>((exponent << 10) | ((rounded >> 13) & 0x3FF));
}

float fp8e4m3_to_f32(uint8_t bits) {
  static const std::array<float, 256> table = make_fp8_table();
  return table[bits];
}

uint8_t f32_to_fp8e4m3(float value, bool saturate) {
  if (std::isnan(value)) return 0x7F;
  const uint8_t sign = std::signbit(value) ? 0x80 : 0;
  float a = std::fabs(value);
  // Past the midpoint between 448 and the (unrepresentable) 480 a value rounds beyond the max; 464 itself
  // ties to even, which is 448.
  if (a > 464.0f) return saturate ? static_cast<uint8_t>(sign | 0x7E) : static_cast<uint8_t>(sign | 0x7F);
  if (a < std::ldexp(1.0f, -6)) {  // subnormals: multiples of 2^-9
    const int m = static_cast<int>(std::nearbyint(a * 512.0f));  // m in [0, 8]; 8 is the smallest normal
    return static_cast<uint8_t>(sign | m);
  }
  int exponent;
  const float fraction = std::frexp(a, &exponent);  // a = fraction * 2^exponent, fraction in [0.5, 1)
  // Mantissa with 3 fractional bits: a = (1 + m/8) * 2^(exponent-1).
  int m = static_cast<int>(std::nearbyint((fraction * 2.0f - 1.0f) * 8.0f));
  int e = exponent - 1 + 7;
  if (m == 8) {
    m = 0;
    ++e;
  }
  return static_cast<uint8_t>(sign | (e << 3) | m);
}

float load_as_f32(const void* data, DType t, size_t i) {
  switch (t) {
    case DType::F32: {
      float v;
      std::memcpy(&v, static_cast<const char*>(data) + i * 4, 4);
      return v;
    }
    case DType::F16:
    case DType::BF16: {
      uint16_t b;
      std::memcpy(&b, static_cast<const char*>(data) + i * 2, 2);
      return t == DType::F16 ? f16_to_f32(b) : bf16_to_f32(b);
    }
    case DType::F8_E4M3:
      return fp8e4m3_to_f32(static_cast<const uint8_t*>(data)[i]);
    default:
      CHECK(false) << "load_as_f32 on non-float dtype " << dtype_name(t);
      return 0;
  }
}

}  // namespace quatre
