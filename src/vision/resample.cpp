// resize_bicubic: Pillow's 8-bit separable resampling (see resample.h).
#include "vision/resample.h"

#include <cmath>
#include <vector>

#include "core/check.h"

namespace quatre::vision {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;
constexpr double kSupport = 2.0;

double bicubic(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// For each output index: the first input index and the fixed-point weights of the inputs it reads.
struct Taps {
  std::vector<int64_t> first, count;
  std::vector<int32_t> weights;  // [out, ksize]
  int64_t ksize = 0;
};

Taps precompute(int64_t in_size, int64_t out_size) {
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filter_scale = std::max(scale, 1.0);
  const double support = kSupport * filter_scale;
  Taps t;
  t.ksize = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  t.first.resize(static_cast<size_t>(out_size));
  t.count.resize(static_cast<size_t>(out_size));
  t.weights.assign(static_cast<size_t>(out_size * t.ksize), 0);
  std::vector<double> k(static_cast<size_t>(t.ksize));
  for (int64_t o = 0; o < out_size; ++o) {
    const double center = (static_cast<double>(o) + 0.5) * scale;
    const auto lo = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);  // C truncation, as Pillow
    const auto hi = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in_size);
    const int64_t n = hi - lo;
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      k[static_cast<size_t>(i)] = bicubic((static_cast<double>(i + lo) - center + 0.5) / filter_scale);
      sum += k[static_cast<size_t>(i)];
    }
    for (int64_t i = 0; i < n; ++i) {
      const double w = sum != 0.0 ? k[static_cast<size_t>(i)] / sum : k[static_cast<size_t>(i)];
      t.weights[static_cast<size_t>(o * t.ksize + i)] =
          static_cast<int32_t>(w < 0 ? -0.5 + w * (1 << kPrecisionBits) : 0.5 + w * (1 << kPrecisionBits));
    }
    t.first[static_cast<size_t>(o)] = lo;
    t.count[static_cast<size_t>(o)] = n;
  }
  return t;
}

uint8_t clip8(int64_t v) {
  if (v >= (int64_t{1} << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<uint8_t>(v >> kPrecisionBits);
}

// out[y, o, c] = clip8(Σ_i in[y, first[o] + i, c] · w[o, i]); `stride` steps along the resampled axis.
RgbImage horizontal(const RgbImage& in, int64_t out_width) {
  const Taps t = precompute(in.width, out_width);
  RgbImage out{.width = out_width, .height = in.height, .rgb = std::vector<uint8_t>(static_cast<size_t>(out_width * in.height * 3))};
  for (int64_t y = 0; y < in.height; ++y) {
    const uint8_t* row = in.rgb.data() + y * in.width * 3;
    for (int64_t o = 0; o < out_width; ++o) {
      const int32_t* w = t.weights.data() + o * t.ksize;
      const uint8_t* src = row + t.first[static_cast<size_t>(o)] * 3;
      for (int c = 0; c < 3; ++c) {
        int64_t s = int64_t{1} << (kPrecisionBits - 1);
        for (int64_t i = 0; i < t.count[static_cast<size_t>(o)]; ++i) s += int64_t{src[i * 3 + c]} * w[i];
        out.rgb[static_cast<size_t>((y * out_width + o) * 3 + c)] = clip8(s);
      }
    }
  }
  return out;
}

RgbImage vertical(const RgbImage& in, int64_t out_height) {
  const Taps t = precompute(in.height, out_height);
  const int64_t row_bytes = in.width * 3;
  RgbImage out{.width = in.width, .height = out_height, .rgb = std::vector<uint8_t>(static_cast<size_t>(row_bytes * out_height))};
  for (int64_t o = 0; o < out_height; ++o) {
    const int32_t* w = t.weights.data() + o * t.ksize;
    const uint8_t* src = in.rgb.data() + t.first[static_cast<size_t>(o)] * row_bytes;
    for (int64_t j = 0; j < row_bytes; ++j) {
      int64_t s = int64_t{1} << (kPrecisionBits - 1);
      for (int64_t i = 0; i < t.count[static_cast<size_t>(o)]; ++i) s += int64_t{src[i * row_bytes + j]} * w[i];
      out.rgb[static_cast<size_t>(o * row_bytes + j)] = clip8(s);
    }
  }
  return out;
}

}  // namespace

RgbImage resize_bicubic(const RgbImage& in, int64_t out_width, int64_t out_height) {
  CHECK(in.width > 0 && in.height > 0 && out_width > 0 && out_height > 0)
      << "resize_bicubic " << in.width << "x" << in.height << " -> " << out_width << "x" << out_height;
  RgbImage x = out_width != in.width ? horizontal(in, out_width) : in;
  return out_height != x.height ? vertical(x, out_height) : x;
}

}  // namespace quatre::vision
