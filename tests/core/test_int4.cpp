// The 4-bit weight format of core/int4.h: the packing and the dequantisation rule on hand-made bytes, the
// quantiser's exact round trip on values already on a group's grid, and its error bound elsewhere; the activations'
// roundings (int8 blocks of 32, BF16).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "core/dtype.h"
#include "core/int4.h"

namespace quatre {
namespace {

struct Quantized {
  std::vector<uint8_t> codes;
  std::vector<uint16_t> scales, offsets;
};

Quantized quantize(const std::vector<float>& w, const Int4Layout& layout) {
  const auto n = static_cast<int64_t>(w.size());
  Quantized q{std::vector<uint8_t>(w.size() / 2), std::vector<uint16_t>(w.size() / static_cast<size_t>(layout.group_size)),
              std::vector<uint16_t>(w.size() / static_cast<size_t>(layout.group_size))};
  quantize_int4_row(w.data(), n, layout, q.codes.data(), q.scales.data(), layout.is_symmetric ? nullptr : q.offsets.data());
  return q;
}

std::vector<float> dequantize(const Quantized& q, int64_t n, const Int4Layout& layout) {
  std::vector<float> out(static_cast<size_t>(n));
  dequantize_int4_row(q.codes.data(), q.scales.data(), layout.is_symmetric ? nullptr : q.offsets.data(), n, layout.group_size,
                      out.data());
  return out;
}

TEST(Int4, PackingAndRuleOnHandMadeBytes) {
  // Byte 0x3A holds column 0 = 0xA (low nibble) and column 1 = 0x3 (high nibble).
  const std::vector<uint8_t> codes = {0x3A, 0xF0};
  EXPECT_EQ(int4_code(codes.data(), 0), 0xA);
  EXPECT_EQ(int4_code(codes.data(), 1), 0x3);
  EXPECT_EQ(int4_code(codes.data(), 2), 0x0);
  EXPECT_EQ(int4_code(codes.data(), 3), 0xF);
  const uint16_t s = f32_to_bf16(0.5f), m = f32_to_bf16(-1.25f);
  std::vector<float> out(4);
  dequantize_int4_row(codes.data(), &s, nullptr, 4, 4, out.data());  // symmetric: s * (code - 8)
  EXPECT_EQ(out, (std::vector<float>{0.5f * 2, 0.5f * -5, 0.5f * -8, 0.5f * 7}));
  dequantize_int4_row(codes.data(), &s, &m, 4, 4, out.data());  // asymmetric: s * code + m
  EXPECT_EQ(out, (std::vector<float>{5.0f - 1.25f, 1.5f - 1.25f, -1.25f, 7.5f - 1.25f}));
  EXPECT_EQ(int4_value(0xA, s, 0, true), 1.0f);
  EXPECT_EQ(int4_value(0x3, s, m, false), 0.25f);
}

TEST(Int4, SymmetricRoundTripIsExactOnTheGrid) {
  std::mt19937_64 rng(7);
  for (int64_t G : {2, 16, 32, 128}) {
    const int64_t n = 4 * G;
    std::vector<float> w(static_cast<size_t>(n));
    std::vector<float> group_scale;
    for (int64_t g = 0; g < n / G; ++g) {
      // A BF16 scale and codes in [-7, 7] with one of magnitude 7, so max|w| / 7 is the scale again.
      const float s = bf16_to_f32(f32_to_bf16(std::ldexp(1.0f + static_cast<float>(rng() % 97) / 97.0f, static_cast<int>(rng() % 20) - 14)));
      for (int64_t i = 0; i < G; ++i) w[static_cast<size_t>(g * G + i)] = s * static_cast<float>(static_cast<int>(rng() % 15) - 7);
      w[static_cast<size_t>(g * G + static_cast<int64_t>(rng() % static_cast<uint64_t>(G)))] = (rng() % 2 ? 7.0f : -7.0f) * s;
      group_scale.push_back(s);
    }
    const Int4Layout layout{G, true};
    const Quantized q = quantize(w, layout);
    EXPECT_EQ(dequantize(q, n, layout), w) << "group size " << G;
    for (size_t g = 0; g < group_scale.size(); ++g) EXPECT_EQ(bf16_to_f32(q.scales[g]), group_scale[g]);
  }
}

TEST(Int4, AsymmetricRoundTripIsExactOnTheGrid) {
  std::mt19937_64 rng(8);
  const int64_t G = 32, n = 3 * G;
  std::vector<float> w(static_cast<size_t>(n));
  for (int64_t g = 0; g < n / G; ++g) {
    // s of 4 significant bits and m = s·k (|k| <= 15): m is a BF16 value and every s·code + m is exact in fp32.
    const float s = std::ldexp(static_cast<float>(8 + rng() % 8), -8 - static_cast<int>(rng() % 4));
    const float m = s * static_cast<float>(static_cast<int>(rng() % 31) - 15);
    for (int64_t i = 0; i < G; ++i) w[static_cast<size_t>(g * G + i)] = s * static_cast<float>(rng() % 16) + m;
    w[static_cast<size_t>(g * G)] = m;                 // code 0
    w[static_cast<size_t>(g * G + 1)] = 15.0f * s + m;  // code 15
  }
  const Int4Layout layout{G, false};
  EXPECT_EQ(dequantize(quantize(w, layout), n, layout), w);
}

TEST(Int4, RoundToNearestErrorIsAtMostHalfAStep) {
  std::mt19937_64 rng(9);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  const int64_t G = 64, n = 16 * G;
  std::vector<float> w(static_cast<size_t>(n));
  for (float& x : w) x = normal(rng);
  w[5] = 0.3f;  // an outlier: its group's step is coarse, the others are untouched
  for (bool is_symmetric : {true, false}) {
    const Int4Layout layout{G, is_symmetric};
    const Quantized q = quantize(w, layout);
    const std::vector<float> back = dequantize(q, n, layout);
    for (int64_t i = 0; i < n; ++i) {
      const float s = bf16_to_f32(q.scales[static_cast<size_t>(i / G)]);
      // Half a step, plus the BF16 rounding of the scale (and offset) moving the grid's ends by < 2^-8 relative.
      const float bound = 0.5f * s + std::fabs(w[static_cast<size_t>(i)]) * 0.008f + (is_symmetric ? 0.0f : 15.0f * s * 0.008f);
      EXPECT_LE(std::fabs(back[static_cast<size_t>(i)] - w[static_cast<size_t>(i)]), bound) << i << (is_symmetric ? " sym" : " asym");
    }
    EXPECT_GT(bf16_to_f32(q.scales[0]), 2 * bf16_to_f32(q.scales[1]));  // the outlier only coarsens its own group
  }
}

TEST(Int4, ZeroGroupAndBadShapes) {
  const std::vector<float> zeros(8, 0.0f);
  const Int4Layout layout{8, true};
  const Quantized q = quantize(zeros, layout);
  EXPECT_EQ(q.codes, (std::vector<uint8_t>(4, 0x88)));  // code 8 = 0
  EXPECT_EQ(dequantize(q, 8, layout), zeros);
  std::vector<uint8_t> codes(4);
  std::vector<uint16_t> scales(1);
  EXPECT_DEATH(quantize_int4_row(zeros.data(), 8, {3, true}, codes.data(), scales.data(), nullptr), "groups of 3");
  std::vector<float> bad = zeros;
  bad[2] = std::nanf("");
  EXPECT_DEATH(quantize_int4_row(bad.data(), 8, layout, codes.data(), scales.data(), nullptr), "non-finite");
}

// round_q8_blocks: each block of kQ8Block (and the shorter last one) comes back as k · (max |x| / 127) with k an
// integer of at most 127 in magnitude, within half a step of x, the largest magnitude at ±127 steps; integers of a
// block whose largest is 127 (a step of 1) and halves of a block whose largest is 63.5 come back exactly; ties round
// to even.
TEST(Int4Activations, Q8BlocksAreInt8StepsOfTheBlockMaximum) {
  constexpr auto B = static_cast<size_t>(kQ8Block);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> x(2 * B + 6);  // two whole blocks and one of 6
  for (float& v : x) v = normal(rng);
  std::vector<float> r = x;
  round_q8_blocks(r.data(), static_cast<int64_t>(r.size()));
  for (size_t b = 0; b < x.size(); b += B) {
    const size_t end = std::min(x.size(), b + B);
    float amax = 0.0f;
    for (size_t j = b; j < end; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    int top = 0;
    for (size_t j = b; j < end; ++j) {
      const float k = r[j] / d;
      EXPECT_NEAR(k, std::nearbyint(k), 1e-3) << "block " << b / B << " column " << j;
      EXPECT_LE(std::fabs(k), 127.0f + 1e-3f);
      EXPECT_LE(std::fabs(r[j] - x[j]), 0.5f * d * (1.0f + 1e-5f)) << "column " << j;
      if (std::fabs(x[j]) == amax) top = static_cast<int>(std::nearbyint(k));
    }
    EXPECT_EQ(std::abs(top), 127) << "block " << b / B;
  }
  std::vector<float> grid(B);
  for (size_t j = 0; j < B; ++j) grid[j] = static_cast<float>(static_cast<int>(j * 2) - 127);  // -127 .. 127, odd
  std::vector<float> g = grid;
  round_q8_blocks(g.data(), kQ8Block);
  EXPECT_EQ(g, grid);
  for (float& v : grid) v *= 0.5f;
  g = grid;
  round_q8_blocks(g.data(), kQ8Block);
  EXPECT_EQ(g, grid);
  std::vector<float> ties = {127.0f, 2.5f, -3.5f, 0.5f};  // a step of 1: 2.5 -> 2, -3.5 -> -4, 0.5 -> 0
  round_q8_blocks(ties.data(), 4);
  EXPECT_EQ(ties, (std::vector<float>{127.0f, 2.0f, -4.0f, 0.0f}));
}

TEST(Int4Activations, ZeroAndNanBlocksAndBf16) {
  constexpr auto B = static_cast<size_t>(kQ8Block);
  std::vector<float> x(B + 8, 0.0f);
  x[B + 3] = 1.0f;
  x[3] = std::nanf("");
  round_q8_blocks(x.data(), static_cast<int64_t>(x.size()));
  for (size_t j = 0; j < B; ++j) EXPECT_TRUE(std::isnan(x[j])) << "a NaN's block, column " << j;
  EXPECT_EQ(std::vector<float>(x.begin() + static_cast<std::ptrdiff_t>(B), x.end()), (std::vector<float>{0, 0, 0, 1, 0, 0, 0, 0}));
  std::vector<float> z(B, 0.0f);
  round_q8_blocks(z.data(), kQ8Block);
  EXPECT_EQ(z, std::vector<float>(B, 0.0f));
  std::vector<float> tiny(B, 1e-39f);  // subnormal: 127 / 1e-39 overflows, so zeros
  tiny[1] = -kQ8MinBlockMax / 2;
  round_q8_blocks(tiny.data(), kQ8Block);
  EXPECT_EQ(tiny, std::vector<float>(B, 0.0f));
  std::vector<float> smallest(B, 0.0f);  // the smallest block maximum still quantised
  smallest[0] = kQ8MinBlockMax;
  round_q8_blocks(smallest.data(), kQ8Block);
  EXPECT_EQ(smallest[0], kQ8MinBlockMax);
  std::vector<float> inf(B, 1.0f);
  inf[7] = -INFINITY;
  round_q8_blocks(inf.data(), kQ8Block);
  for (float v : inf) EXPECT_TRUE(std::isnan(v));
  std::vector<float> v = {1.0f + 1.0f / 256, 1.0f + 3.0f / 256, -1.2345f, 3.0f};
  const std::vector<float> before = v;
  round_int4_activations(v.data(), 4, Int4Activations::kFp32);
  EXPECT_EQ(v, before);
  round_int4_activations(v.data(), 4, Int4Activations::kBf16);
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(v[i], bf16_to_f32(f32_to_bf16(before[i])));
  EXPECT_EQ(v[0], 1.0f);               // a tie to even (bf16 has 7 fraction bits)
  EXPECT_EQ(v[1], 1.0f + 4.0f / 256);  // a tie to even, upwards
}

}  // namespace
}  // namespace quatre
