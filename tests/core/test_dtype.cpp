// DType names/sizes and the scalar conversions against independent references
// (the compiler's _Float16 for f16, exhaustive round trips and the e4m3fn definition for fp8).
#include <cmath>
#include <cstring>
#include <random>

#include <gtest/gtest.h>

#include "core/dtype.h"

namespace quatre {
namespace {

TEST(DType, NamesAndSizesRoundTrip) {
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::I32, DType::I64, DType::U8}) {
    ASSERT_EQ(parse_dtype(dtype_name(t)), t);
  }
  EXPECT_EQ(dtype_size(DType::BF16), 2u);
  EXPECT_EQ(dtype_size(DType::F8_E4M3), 1u);
  EXPECT_EQ(dtype_size(DType::I64), 8u);
  EXPECT_FALSE(parse_dtype("F64").has_value());
  EXPECT_FALSE(parse_dtype("f32").has_value());  // the format's names are upper case
  EXPECT_FALSE(parse_dtype("").has_value());
}

TEST(DType, Bf16KnownValues) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(f32_to_bf16(-2.0f), 0xC000);
  EXPECT_EQ(bf16_to_f32(0x3F80), 1.0f);
  // 1 + 2^-8 is exactly halfway between 1 and 1 + 2^-7: ties to even gives 1.
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);
  // 1 + 3*2^-8 is halfway between 1+2^-7 (odd) and 1+2^-6 (even): rounds up.
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::nanf("")))));
  EXPECT_TRUE(std::isinf(bf16_to_f32(f32_to_bf16(INFINITY))));
}

TEST(DType, Bf16RoundTripsEveryFiniteValue) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float v = bf16_to_f32(static_cast<uint16_t>(b));
    if (std::isnan(v)) continue;
    ASSERT_EQ(f32_to_bf16(v), b) << b;
  }
}

TEST(DType, F16MatchesCompilerFloat16) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> mantissa(-1.0f, 1.0f);
  std::uniform_int_distribution<int> exponent(-30, 18);
  for (int i = 0; i < 200000; ++i) {
    const float v = std::ldexp(mantissa(rng), exponent(rng));
    const _Float16 want = static_cast<_Float16>(v);
    uint16_t want_bits;
    std::memcpy(&want_bits, &want, 2);
    ASSERT_EQ(f32_to_f16(v), want_bits) << v;
    ASSERT_EQ(f16_to_f32(want_bits), static_cast<float>(want));
  }
}

TEST(DType, Fp8DecodesByDefinition) {
  EXPECT_EQ(fp8e4m3_to_f32(0x00), 0.0f);
  EXPECT_EQ(fp8e4m3_to_f32(0x38), 1.0f);                    // exponent 7 = bias
  EXPECT_EQ(fp8e4m3_to_f32(0x7E), 448.0f);                  // the largest finite value
  EXPECT_EQ(fp8e4m3_to_f32(0xFE), -448.0f);
  EXPECT_EQ(fp8e4m3_to_f32(0x01), std::ldexp(1.0f, -9));    // smallest subnormal: 1/8 * 2^-6
  EXPECT_EQ(fp8e4m3_to_f32(0x08), std::ldexp(1.0f, -6));    // smallest normal
  EXPECT_TRUE(std::isnan(fp8e4m3_to_f32(0x7F)));
  EXPECT_TRUE(std::isnan(fp8e4m3_to_f32(0xFF)));
}

TEST(DType, Fp8RoundTripsEveryValueAndRoundsToNearestEven) {
  for (int b = 0; b < 256; ++b) {
    const float v = fp8e4m3_to_f32(static_cast<uint8_t>(b));
    if (std::isnan(v)) continue;
    if (b == 0x80) {
      EXPECT_EQ(f32_to_fp8e4m3(v), 0x80);  // -0 keeps its sign
      continue;
    }
    ASSERT_EQ(f32_to_fp8e4m3(v), b) << b;
  }
  // Every midpoint between neighbours rounds to the one with an even mantissa.
  for (int b = 0; b < 0x7E; ++b) {
    const float lo = fp8e4m3_to_f32(static_cast<uint8_t>(b)), hi = fp8e4m3_to_f32(static_cast<uint8_t>(b + 1));
    const int even = (b % 2 == 0) ? b : b + 1;
    ASSERT_EQ(f32_to_fp8e4m3((lo + hi) / 2), even) << "between " << lo << " and " << hi;
    ASSERT_EQ(f32_to_fp8e4m3(std::nextafter((lo + hi) / 2, 0.0f)), b);
    ASSERT_EQ(f32_to_fp8e4m3(std::nextafter((lo + hi) / 2, 1000.0f)), b + 1);
  }
  EXPECT_EQ(f32_to_fp8e4m3(464.0f), 0x7E);  // the tie above 448 goes to the even 448
  EXPECT_EQ(f32_to_fp8e4m3(500.0f, /*saturate=*/true), 0x7E);
  EXPECT_EQ(f32_to_fp8e4m3(-500.0f, /*saturate=*/true), 0xFE);
  EXPECT_EQ(f32_to_fp8e4m3(500.0f, /*saturate=*/false), 0x7F);
  EXPECT_EQ(f32_to_fp8e4m3(std::nanf("")), 0x7F);
}

TEST(DType, LoadAsF32ReadsEachFloatType) {
  const uint16_t bf16[] = {f32_to_bf16(1.5f), f32_to_bf16(-3.0f)};
  EXPECT_EQ(load_as_f32(bf16, DType::BF16, 1), -3.0f);
  const uint8_t fp8[] = {0x38, 0x7E};
  EXPECT_EQ(load_as_f32(fp8, DType::F8_E4M3, 1), 448.0f);
  const float f32[] = {0.25f, 8.0f};
  EXPECT_EQ(load_as_f32(f32, DType::F32, 1), 8.0f);
}

}  // namespace
}  // namespace quatre
