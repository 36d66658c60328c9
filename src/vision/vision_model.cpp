// VisionModel: Pixtral tower + projector on the host, each function one step of MODEL.md §7.3-§7.6.
#include "vision/vision_model.h"

#include <cmath>

#include <fmt/format.h>

#include "core/check.h"
#include "core/error.h"
#include "io/weight_map.h"

namespace quatre::vision {
namespace {

using io::WeightKind;

std::vector<float> dequantise(const io::WeightView& v) {
  std::vector<float> out(static_cast<size_t>(v.bytes.size() / dtype_size(v.dtype)));
  for (size_t i = 0; i < out.size(); ++i) out[i] = v.at(i);
  return out;
}

Linear linear(const io::Checkpoint& ck, WeightKind kind, int32_t layer = -1) {
  const io::WeightView& v = ck.weight({.kind = kind, .layer = layer, .expert = -1});
  Linear l{.w = dequantise(v), .out = v.shape[0], .in = 0};
  l.in = static_cast<int64_t>(l.w.size()) / l.out;
  return l;
}

std::vector<float> vec(const io::Checkpoint& ck, WeightKind kind, int32_t layer = -1) {
  return dequantise(ck.weight({.kind = kind, .layer = layer, .expert = -1}));
}

// y [M, out] = x [M, in] · wᵀ
std::vector<float> matmul(const std::vector<float>& x, const Linear& l) {
  const int64_t M = static_cast<int64_t>(x.size()) / l.in;
  CHECK(M * l.in == static_cast<int64_t>(x.size())) << "vision matmul: " << x.size() << " values for rows of " << l.in;
  std::vector<float> y(static_cast<size_t>(M * l.out));
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x.data() + m * l.in;
    for (int64_t o = 0; o < l.out; ++o) {
      const float* wr = l.w.data() + o * l.in;
      double s = 0.0;
      for (int64_t i = 0; i < l.in; ++i) s += static_cast<double>(xr[i]) * wr[i];
      y[static_cast<size_t>(m * l.out + o)] = static_cast<float>(s);
    }
  }
  return y;
}

// g ⊙ x · rsqrt(mean(x²) + eps), per row of n
std::vector<float> rms_norm(const std::vector<float>& x, const std::vector<float>& g, double eps) {
  const size_t n = g.size();
  std::vector<float> y(x.size());
  for (size_t r = 0; r < x.size() / n; ++r) {
    double ss = 0.0;
    for (size_t i = 0; i < n; ++i) ss += static_cast<double>(x[r * n + i]) * x[r * n + i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
    for (size_t i = 0; i < n; ++i) y[r * n + i] = g[i] * (x[r * n + i] * inv);
  }
  return y;
}

void add_to(std::vector<float>& x, const std::vector<float>& y) {
  for (size_t i = 0; i < x.size(); ++i) x[i] += y[i];
}

float silu(float v) { return v / (1.0f + std::exp(-v)); }
float gelu_erf(float v) { return static_cast<float>(0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)))); }

}  // namespace

VisionWeights VisionWeights::load(const io::Checkpoint& ck) {
  const auto& vc = ck.config().vision;
  if (!vc) throw LoadError(fmt::format("{}: the checkpoint has no vision tower (images need one)", ck.dir().string()));
  VisionWeights w;
  w.patch_conv = linear(ck, WeightKind::kVisionPatchConv);
  w.ln_pre = vec(ck, WeightKind::kVisionLnPre);
  for (int32_t l = 0; l < static_cast<int32_t>(vc->n_layers); ++l) {
    w.layers.push_back({.attn_norm = vec(ck, WeightKind::kVisionAttnNorm, l), .ffn_norm = vec(ck, WeightKind::kVisionFfnNorm, l),
                        .q = linear(ck, WeightKind::kVisionQ, l), .k = linear(ck, WeightKind::kVisionK, l),
                        .v = linear(ck, WeightKind::kVisionV, l), .o = linear(ck, WeightKind::kVisionO, l),
                        .gate = linear(ck, WeightKind::kVisionGate, l), .up = linear(ck, WeightKind::kVisionUp, l),
                        .down = linear(ck, WeightKind::kVisionDown, l)});
  }
  w.hf_qk_rows = ck.weight({.kind = WeightKind::kVisionQ, .layer = 0, .expert = -1}).row_order == io::RowOrder::kHfVisionQk;
  w.projector_norm = vec(ck, WeightKind::kProjectorNorm);
  w.merger = linear(ck, WeightKind::kPatchMerger);
  w.linear_1 = linear(ck, WeightKind::kProjectorIn);
  w.linear_2 = linear(ck, WeightKind::kProjectorOut);
  return w;
}

VisionModel::VisionModel(const io::VisionConfig& config, VisionWeights weights) : cfg_(config), w_(std::move(weights)) {
  CHECK(cfg_.head_dim % 4 == 0 && cfg_.n_heads * cfg_.head_dim == cfg_.hidden_size)
      << "vision heads " << cfg_.n_heads << " x " << cfg_.head_dim << " for hidden " << cfg_.hidden_size;
  // transformers: 1 / theta ** (arange(0, dh, 2).float() / dh), in float32
  for (int64_t j = 0; j < cfg_.head_dim / 2; ++j) {
    const float e = static_cast<float>(2 * j) / static_cast<float>(cfg_.head_dim);
    freq_.push_back(1.0f / std::pow(static_cast<float>(cfg_.rope_theta), e));
  }
}

// Conv2d(C -> Hv, kernel = stride = P, no bias) as [hp*wp, C*P*P] · patch_convᵀ, patches row-major.
std::vector<float> VisionModel::patch_embed(const PixelValues& img) const {
  const int64_t P = cfg_.patch_size, hp = img.height / P, wp = img.width / P, C = 3;
  std::vector<float> patches(static_cast<size_t>(hp * wp * C * P * P));
  size_t at = 0;
  for (int64_t r = 0; r < hp; ++r) {
    for (int64_t c = 0; c < wp; ++c) {
      for (int64_t ch = 0; ch < C; ++ch) {
        for (int64_t ky = 0; ky < P; ++ky) {
          for (int64_t kx = 0; kx < P; ++kx) {
            patches[at++] = img.chw[static_cast<size_t>((ch * img.height + r * P + ky) * img.width + c * P + kx)];
          }
        }
      }
    }
  }
  return matmul(patches, w_.patch_conv);
}

// x += o(attn(rms(x))); x += down(silu(gate z) ⊙ up z), z = rms(x). Attention: 2-D RoPE on q, k, softmax(q·k/√dh)
// over the patches of the token's own image only.
void VisionModel::layer(const VisionLayer& w, std::vector<float>& x, std::span<const int64_t> rows,
                        std::span<const int64_t> cols, std::span<const int64_t> image_begin) const {
  const int64_t N = static_cast<int64_t>(rows.size()), Hv = cfg_.hidden_size, dh = cfg_.head_dim, nh = cfg_.n_heads;
  const std::vector<float> h = rms_norm(x, w.attn_norm, cfg_.norm_eps);
  std::vector<float> q = matmul(h, w.q), k = matmul(h, w.k);
  const std::vector<float> v = matmul(h, w.v);
  // RoPE: angle j < dh/4 is row·f[2j], then col·f[2(j - dh/4) + 1]
  for (int64_t t = 0; t < N; ++t) {
    for (int64_t j = 0; j < dh / 2; ++j) {
      const float ang = j < dh / 4 ? static_cast<float>(rows[static_cast<size_t>(t)]) * freq_[static_cast<size_t>(2 * j)]
                                   : static_cast<float>(cols[static_cast<size_t>(t)]) * freq_[static_cast<size_t>(2 * (j - dh / 4) + 1)];
      const float cs = std::cos(ang), sn = std::sin(ang);
      const int64_t a = w_.hf_qk_rows ? j : 2 * j, b = w_.hf_qk_rows ? j + dh / 2 : 2 * j + 1;
      for (int64_t head = 0; head < nh; ++head) {
        for (std::vector<float>* m : {&q, &k}) {
          float* p = m->data() + t * Hv + head * dh;
          const float x0 = p[a], x1 = p[b];
          p[a] = x0 * cs - x1 * sn;
          p[b] = x1 * cs + x0 * sn;
        }
      }
    }
  }
  std::vector<float> attn(static_cast<size_t>(N * Hv));
  std::vector<double> s;
  const double scale = 1.0 / std::sqrt(static_cast<double>(dh));
  for (size_t img = 0; img + 1 < image_begin.size(); ++img) {
    const int64_t b0 = image_begin[img], b1 = image_begin[img + 1];
    s.resize(static_cast<size_t>(b1 - b0));
    for (int64_t head = 0; head < nh; ++head) {
      for (int64_t t = b0; t < b1; ++t) {
        const float* qt = q.data() + t * Hv + head * dh;
        double mx = -INFINITY;
        for (int64_t u = b0; u < b1; ++u) {
          const float* ku = k.data() + u * Hv + head * dh;
          double d = 0.0;
          for (int64_t i = 0; i < dh; ++i) d += static_cast<double>(qt[i]) * ku[i];
          s[static_cast<size_t>(u - b0)] = d * scale;
          mx = std::max(mx, d * scale);
        }
        double sum = 0.0;
        for (double& e : s) sum += (e = std::exp(e - mx));
        float* out = attn.data() + t * Hv + head * dh;
        for (int64_t i = 0; i < dh; ++i) {
          double acc = 0.0;
          for (int64_t u = b0; u < b1; ++u) acc += s[static_cast<size_t>(u - b0)] * v[static_cast<size_t>(u * Hv + head * dh + i)];
          out[i] = static_cast<float>(acc / sum);
        }
      }
    }
  }
  add_to(x, matmul(attn, w.o));
  const std::vector<float> z = rms_norm(x, w.ffn_norm, cfg_.norm_eps);
  std::vector<float> g = matmul(z, w.gate);
  const std::vector<float> u = matmul(z, w.up);
  for (size_t i = 0; i < g.size(); ++i) g[i] = silu(g[i]) * u[i];
  add_to(x, matmul(g, w.down));
}

// merged' = merging_layer · [feat[2a+dy, 2b+dx, ch] at ch·M² + dy·M + dx], per image, tokens row-major over (a, b);
// then linear_2 · gelu(linear_1 · merged').
std::vector<float> VisionModel::project(const std::vector<float>& hidden, std::span<const PixelValues> images) const {
  const int64_t Hv = cfg_.hidden_size, M = cfg_.spatial_merge_size, P = cfg_.patch_size;
  const std::vector<float> normed = rms_norm(hidden, w_.projector_norm, cfg_.projector_norm_eps);
  std::vector<float> merged;
  int64_t base = 0;
  for (const PixelValues& img : images) {
    const int64_t hp = img.height / P, wp = img.width / P;
    for (int64_t a = 0; a < hp / M; ++a) {
      for (int64_t b = 0; b < wp / M; ++b) {
        const size_t at = merged.size();
        merged.resize(at + static_cast<size_t>(Hv * M * M));
        for (int64_t dy = 0; dy < M; ++dy) {
          for (int64_t dx = 0; dx < M; ++dx) {
            const float* f = normed.data() + (base + (a * M + dy) * wp + b * M + dx) * Hv;
            for (int64_t ch = 0; ch < Hv; ++ch) merged[at + static_cast<size_t>(ch * M * M + dy * M + dx)] = f[ch];
          }
        }
      }
    }
    base += hp * wp;
  }
  std::vector<float> e = matmul(matmul(merged, w_.merger), w_.linear_1);
  for (float& v : e) v = gelu_erf(v);
  return matmul(e, w_.linear_2);
}

void VisionModel::run(std::span<const PixelValues> images, std::vector<float>* hidden, std::vector<float>* features) const {
  const int64_t P = cfg_.patch_size, cell = P * cfg_.spatial_merge_size, max_patches = cfg_.image_size / P;
  std::vector<float> x;
  std::vector<int64_t> rows, cols, image_begin{0};
  for (const PixelValues& img : images) {
    if (img.height <= 0 || img.width <= 0 || img.height % cell != 0 || img.width % cell != 0 ||
        img.height / P > max_patches || img.width / P > max_patches) {
      throw InvalidRequest(fmt::format("image of {}x{} px: the vision encoder takes sides that are multiples of {} px, at most {} px",
                                       img.width, img.height, cell, cfg_.image_size));
    }
    const std::vector<float> e = patch_embed(img);
    x.insert(x.end(), e.begin(), e.end());
    for (int64_t r = 0; r < img.height / P; ++r) {
      for (int64_t c = 0; c < img.width / P; ++c) {
        rows.push_back(r);
        cols.push_back(c);
      }
    }
    image_begin.push_back(static_cast<int64_t>(rows.size()));
  }
  x = rms_norm(x, w_.ln_pre, cfg_.norm_eps);
  for (const VisionLayer& l : w_.layers) layer(l, x, rows, cols, image_begin);
  if (features != nullptr) *features = project(x, images);
  if (hidden != nullptr) *hidden = std::move(x);
}

std::vector<float> VisionModel::encode(std::span<const PixelValues> images) const {
  std::vector<float> h;
  run(images, &h, nullptr);
  return h;
}

std::vector<float> VisionModel::image_features(std::span<const PixelValues> images) const {
  std::vector<float> f;
  run(images, nullptr, &f);
  return f;
}

}  // namespace quatre::vision
