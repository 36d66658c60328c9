// VisionModel: Pixtral tower + projector on a core::Backend, each function one step of MODEL.md §7.3-§7.6.
#include "vision/vision_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include <fmt/format.h>

#include "core/check.h"
#include "core/error.h"
#include "io/weight_map.h"

namespace quatre::vision {
namespace {

using io::WeightKind;

class Loader {
 public:
  Loader(const io::Checkpoint& ck, Backend& be, VisionWeights& out) : ck_(ck), be_(be), out_(out) {}

  // The stored weight as a host view (4-bit: dequantised to an F32 copy), reshaped to [rows, numel/rows] (a rank-1
  // norm: rows 0 keeps its shape), then prepared by the backend.
  Weight operator()(WeightKind kind, int32_t layer = -1, int64_t rows = 0) const {
    return be_.prepare_weight(stored(kind, layer, rows));
  }

  // merger [Hv, Hv*M*M], column ch*M*M + d -> d*Hv + ch (d = dy*M + dx): a reordered host copy in the stored dtype.
  Weight merger(int64_t Hv, int64_t MM) const {
    const Weight w = stored(WeightKind::kPatchMerger, -1, Hv);
    CHECK(w.w.rank() == 2 && w.w.dim(1) == Hv * MM) << "patch merger " << w.w.shape_string() << " for hidden " << Hv;
    const size_t e = dtype_size(w.w.dtype());
    auto& bytes = *out_.owned.emplace_back(std::make_shared<std::vector<std::byte>>(w.w.bytes()));
    const auto* src = static_cast<const std::byte*>(w.w.data());
    for (int64_t r = 0; r < Hv; ++r) {
      for (int64_t ch = 0; ch < Hv; ++ch) {
        for (int64_t d = 0; d < MM; ++d) {
          std::memcpy(bytes.data() + static_cast<size_t>(r * Hv * MM + d * Hv + ch) * e,
                      src + static_cast<size_t>(r * Hv * MM + ch * MM + d) * e, e);
        }
      }
    }
    Weight reordered = w;
    reordered.w = Tensor(bytes.data(), w.w.dtype(), {Hv, Hv * MM}, Device::kCpu);
    return be_.prepare_weight(reordered);
  }

 private:
  Weight stored(WeightKind kind, int32_t layer, int64_t rows) const {
    const io::WeightView& v = ck_.weight({.kind = kind, .layer = layer, .expert = -1});
    Weight w;
    w.weight_scale = v.weight_scale;
    if (v.is_int4()) {  // no 4-bit tower is written (quatre quantize leaves it), but a checkpoint may hold one
      size_t n = 1;
      for (int64_t d : v.shape) n *= static_cast<size_t>(d);
      auto& bytes = *out_.owned.emplace_back(std::make_shared<std::vector<std::byte>>(n * sizeof(float)));
      auto* f = reinterpret_cast<float*>(bytes.data());
      for (size_t i = 0; i < n; ++i) f[i] = v.at(i);
      w.w = Tensor(bytes.data(), DType::F32, v.shape, Device::kCpu);
      w.weight_scale = 1.0f;
    } else {
      w.w = Tensor(const_cast<std::byte*>(v.bytes.data()), v.dtype, v.shape, Device::kCpu);  // never written
      CHECK(w.w.bytes() == v.bytes.size()) << v.source << ": " << v.bytes.size() << " bytes for " << w.w.shape_string();
    }
    if (rows > 0) w.w = w.w.reshaped({rows, w.w.numel() / rows});
    return w;
  }

  const io::Checkpoint& ck_;
  Backend& be_;
  VisionWeights& out_;
};

}  // namespace

VisionWeights VisionWeights::load(const io::Checkpoint& ck, Backend& backend) {
  const auto& vc = ck.config().vision;
  if (!vc) throw LoadError(fmt::format("{}: the checkpoint has no vision tower (images need one)", ck.dir().string()));
  VisionWeights w;
  const Loader load(ck, backend, w);
  const int64_t Hv = vc->hidden_size;
  w.patch_conv = load(WeightKind::kVisionPatchConv, -1, Hv);  // [Hv, 3, P, P] -> [Hv, 3P²]
  w.ln_pre = load(WeightKind::kVisionLnPre);
  for (int32_t l = 0; l < static_cast<int32_t>(vc->n_layers); ++l) {
    w.layers.push_back({.attn_norm = load(WeightKind::kVisionAttnNorm, l), .ffn_norm = load(WeightKind::kVisionFfnNorm, l),
                        .q = load(WeightKind::kVisionQ, l), .k = load(WeightKind::kVisionK, l),
                        .v = load(WeightKind::kVisionV, l), .o = load(WeightKind::kVisionO, l),
                        .ffn = {.gate = load(WeightKind::kVisionGate, l), .up = load(WeightKind::kVisionUp, l),
                                .down = load(WeightKind::kVisionDown, l)}});
  }
  w.hf_qk_rows = ck.weight({.kind = WeightKind::kVisionQ, .layer = 0, .expert = -1}).row_order == io::RowOrder::kHfVisionQk;
  w.projector_norm = load(WeightKind::kProjectorNorm);
  w.merger = load.merger(Hv, vc->spatial_merge_size * vc->spatial_merge_size);
  w.linear_1 = load(WeightKind::kProjectorIn);
  w.linear_2 = load(WeightKind::kProjectorOut);
  return w;
}

namespace {

const io::VisionConfig& tower_config(const io::Checkpoint& checkpoint) {
  if (!checkpoint.config().vision) {
    throw LoadError(fmt::format("{}: the checkpoint has no vision tower (images need one)", checkpoint.dir().string()));
  }
  return *checkpoint.config().vision;
}

}  // namespace

VisionModel::VisionModel(const io::Checkpoint& checkpoint, std::unique_ptr<Backend> backend, VisionOptions options)
    : VisionModel(tower_config(checkpoint), {}, std::move(backend), options) {
  w_ = VisionWeights::load(checkpoint, *be_);
  if (be_->device() != Device::kCpu) w_.owned.clear();  // copied to the device; the CPU backend reads them
}

VisionModel::VisionModel(const io::VisionConfig& config, VisionWeights weights, std::unique_ptr<Backend> backend,
                         VisionOptions options)
    : cfg_(config), options_(options), be_(std::move(backend)), w_(std::move(weights)) {
  CHECK(be_ != nullptr) << "VisionModel without a backend";
  CHECK(cfg_.head_dim % 4 == 0 && cfg_.n_heads * cfg_.head_dim == cfg_.hidden_size)
      << "vision heads " << cfg_.n_heads << " x " << cfg_.head_dim << " for hidden " << cfg_.hidden_size;
  // transformers: 1 / theta ** (arange(0, dh, 2).float() / dh), in float32
  for (int64_t j = 0; j < cfg_.head_dim / 2; ++j) {
    const float e = static_cast<float>(2 * j) / static_cast<float>(cfg_.head_dim);
    freq_.push_back(1.0f / std::pow(static_cast<float>(cfg_.rope_theta), e));
  }
}

// Conv2d(C -> Hv, kernel = stride = P, no bias) as [N, C*P*P] · patch_convᵀ, each image's patches row-major: the
// patches are cut on the host and go up in one set_rows.
Tensor VisionModel::patch_embed(std::span<const PixelValues> images, Arena& a) const {
  const int64_t P = cfg_.patch_size, C = 3, width = C * P * P;
  std::vector<float> patches;
  for (const PixelValues& img : images) {
    const int64_t hp = img.height / P, wp = img.width / P;
    for (int64_t r = 0; r < hp; ++r) {
      for (int64_t c = 0; c < wp; ++c) {
        for (int64_t ch = 0; ch < C; ++ch) {
          for (int64_t ky = 0; ky < P; ++ky) {
            const float* row = img.chw.data() + (ch * img.height + r * P + ky) * img.width + c * P;
            patches.insert(patches.end(), row, row + P);
          }
        }
      }
    }
  }
  const auto N = static_cast<int64_t>(patches.size()) / width;
  Tensor x = a.tensor(DType::F32, {N, width});
  // Up in pieces of 1024 rows (2.4 MB at P = 14): a device backend's upload ring keeps its size.
  constexpr int64_t kPiece = 1024;
  std::vector<int32_t> rows;
  for (int64_t r0 = 0; r0 < N; r0 += kPiece) {
    const int64_t n = std::min(kPiece, N - r0);
    rows.resize(static_cast<size_t>(n));
    std::iota(rows.begin(), rows.end(), 0);
    be_->set_rows(x.rows(r0, n), rows, std::span<const float>(patches).subspan(static_cast<size_t>(r0 * width), static_cast<size_t>(n * width)));
  }
  return be_->matmul(x, w_.patch_conv, a);
}

// x += o(attn(rms(x))); x += down(silu(gate z) ⊙ up z), z = rms(x). Attention: 2-D RoPE on q, k, softmax(q·k/√dh)
// over the patches of the token's own image only.
void VisionModel::layer(const VisionLayer& w, Tensor x, const Rope2dArgs& rope, std::span<const int32_t> image_begin,
                        Arena& a) const {
  const Tensor h = be_->rms_norm(x, w.attn_norm, static_cast<float>(cfg_.norm_eps), a);  // [N,Hv]
  Tensor q = be_->matmul(h, w.q, a), k = be_->matmul(h, w.k, a);                         // [N,Hv]
  const Tensor v = be_->matmul(h, w.v, a);                                                // [N,Hv]
  be_->rope_2d(q, k, rope);
  const Tensor attn = be_->segment_attention({.q = q, .k = k, .v = v, .segment_begin = image_begin,
                                              .n_heads = cfg_.n_heads,
                                              .scale = 1.0f / std::sqrt(static_cast<float>(cfg_.head_dim)),
                                              .bf16_operands = options_.bf16_attention_operands},
                                             a);                                          // [N,Hv]
  be_->matmul_add(x, attn, w.o, a);                                                       // x += o(attn)
  const Tensor z = be_->rms_norm(x, w.ffn_norm, static_cast<float>(cfg_.norm_eps), a);   // [N,Hv]
  be_->add_to(x, be_->ffn(z, w.ffn, a));
}

// merged = [feat[2a+dy, 2b+dx, :] for dy, dx] per image, tokens row-major over (a, b) (the merger's columns were
// reordered to match, VisionWeights); then linear_2 · gelu(linear_1 · merging_layer · merged).
Tensor VisionModel::project(const Tensor& hidden, std::span<const PixelValues> images, Arena& a) const {
  const int64_t Hv = cfg_.hidden_size, M = cfg_.spatial_merge_size, P = cfg_.patch_size;
  const Tensor normed = be_->rms_norm(hidden, w_.projector_norm, static_cast<float>(cfg_.projector_norm_eps), a);
  std::vector<int32_t> order;  // [N]: (token, dy, dx) -> patch row
  int64_t base = 0;
  for (const PixelValues& img : images) {
    const int64_t hp = img.height / P, wp = img.width / P;
    for (int64_t r = 0; r < hp / M; ++r) {
      for (int64_t c = 0; c < wp / M; ++c) {
        for (int64_t dy = 0; dy < M; ++dy) {
          for (int64_t dx = 0; dx < M; ++dx) order.push_back(static_cast<int32_t>(base + (r * M + dy) * wp + c * M + dx));
        }
      }
    }
    base += hp * wp;
  }
  const auto tokens = static_cast<int64_t>(order.size()) / (M * M);
  const Tensor merged = be_->gather_rows(normed, order, a).reshaped({tokens, M * M * Hv});  // [N/M², M²·Hv]
  Tensor e = be_->matmul(be_->matmul(merged, w_.merger, a), w_.linear_1, a);              // [N/M², D]
  be_->gelu(e);
  return be_->matmul(e, w_.linear_2, a);                                                   // [N/M², D]
}

void VisionModel::run(std::span<const PixelValues> images, std::vector<float>* hidden, std::vector<float>* features) const {
  const int64_t P = cfg_.patch_size, cell = P * cfg_.spatial_merge_size, max_patches = cfg_.image_size / P;
  std::vector<int32_t> rows, cols, image_begin{0};
  int64_t n_patches = 0;
  for (const PixelValues& img : images) {
    if (img.height <= 0 || img.width <= 0 || img.height % cell != 0 || img.width % cell != 0 ||
        img.height / P > max_patches || img.width / P > max_patches) {
      throw InvalidRequest(fmt::format("image of {}x{} px: the vision encoder takes sides that are multiples of {} px, at most {} px",
                                       img.width, img.height, cell, cfg_.image_size));
    }
    if (static_cast<int64_t>(img.chw.size()) != 3 * img.height * img.width) {
      throw InvalidRequest(fmt::format("image of {}x{} px with {} pixel values (expected 3 x {} x {})", img.width,
                                       img.height, img.chw.size(), img.height, img.width));
    }
    n_patches += (img.height / P) * (img.width / P);
    if (n_patches > (int64_t{1} << 30)) {  // rows are int32 indices
      throw InvalidRequest(fmt::format("{} images of {} patches or more: too many for one vision call", images.size(), n_patches));
    }
    for (int64_t r = 0; r < img.height / P; ++r) {
      for (int64_t c = 0; c < img.width / P; ++c) {
        rows.push_back(static_cast<int32_t>(r));
        cols.push_back(static_cast<int32_t>(c));
      }
    }
    image_begin.push_back(static_cast<int32_t>(rows.size()));
  }
  if (images.empty()) {
    if (hidden != nullptr) hidden->clear();
    if (features != nullptr) features->clear();
    return;
  }
  const std::scoped_lock lock(run_);
  if (arena_ == nullptr) arena_ = std::make_unique<Arena>(be_->memory(), Arena::Options{.chunk_bytes = size_t{64} << 20});
  Arena& a = *arena_;
  a.reset();
  Tensor x = be_->rms_norm(patch_embed(images, a), w_.ln_pre, static_cast<float>(cfg_.norm_eps), a);  // [N,Hv]
  const Rope2dArgs rope{.freq = freq_, .rows = rows, .cols = cols, .n_heads = cfg_.n_heads, .head_dim = cfg_.head_dim,
                        .half_pairs = w_.hf_qk_rows};
  const Arena::Mark after_x = a.mark();
  for (const VisionLayer& l : w_.layers) {
    layer(l, x, rope, image_begin, a);
    a.rewind(after_x);  // a layer's scratch only
  }
  if (features != nullptr) {
    const Tensor f = project(x, images, a);
    features->resize(static_cast<size_t>(f.numel()));
    be_->copy_to_host(f, features->data());
  }
  if (hidden != nullptr) {
    hidden->resize(static_cast<size_t>(x.numel()));
    be_->copy_to_host(x, hidden->data());
  }
}

void VisionModel::warm_up() const {
  const int64_t side = cfg_.image_size / (cfg_.patch_size * cfg_.spatial_merge_size) * cfg_.patch_size * cfg_.spatial_merge_size;
  const std::vector<PixelValues> blank = {PixelValues{.height = side, .width = side, .chw = std::vector<float>(static_cast<size_t>(3 * side * side))}};
  std::vector<float> features;
  run(blank, nullptr, &features);
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
