// VisionModel: the Pixtral encoder (MODEL.md §7.3), the projector pre-norm, the 2x2 patch merger and the projector
// MLP (§7.4-§7.6), in float32 on the host (the CPU path; weights dequantised once at load). Images of one call form
// one sequence with block-diagonal attention: a patch never sees another image. Depends on core, io, vision.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "io/checkpoint.h"
#include "vision/preprocess.h"

namespace quatre::vision {

struct Linear {
  std::vector<float> w;  // [out, in], dequantised
  int64_t out = 0, in = 0;
};

struct VisionLayer {
  std::vector<float> attn_norm, ffn_norm;  // [Hv]
  Linear q, k, v, o;                       // [Hv, Hv]
  Linear gate, up, down;                   // [Iv, Hv], [Iv, Hv], [Hv, Iv]
};

struct VisionWeights {
  Linear patch_conv;  // [Hv, C*P*P], columns in (c, ky, kx) order
  std::vector<float> ln_pre;
  std::vector<VisionLayer> layers;
  bool hf_qk_rows = false;  // q/k rows in HF's rotate-half order (else native interleaved pairs), MODEL.md §2.5
  std::vector<float> projector_norm;  // [Hv]
  Linear merger;                      // [Hv, Hv*M*M]
  Linear linear_1, linear_2;          // [D, Hv], [D, D]

  // Throws LoadError when the checkpoint has no vision tower.
  static VisionWeights load(const io::Checkpoint& checkpoint);
};

class VisionModel {
 public:
  VisionModel(const io::VisionConfig& config, VisionWeights weights);

  // The tower's last hidden state, every image's patches in order: [Σ (h'/P)(w'/P), Hv].
  std::vector<float> encode(std::span<const PixelValues> images) const;
  // What is spliced at the [IMG] positions: [Σ (h'/PM)(w'/PM), D] (the projector output).
  std::vector<float> image_features(std::span<const PixelValues> images) const;
  // Both, from one tower run.
  void run(std::span<const PixelValues> images, std::vector<float>* hidden, std::vector<float>* features) const;

  const io::VisionConfig& config() const { return cfg_; }
  int64_t text_hidden() const { return w_.linear_2.out; }

 private:
  std::vector<float> patch_embed(const PixelValues& image) const;  // [hp*wp, Hv]
  void layer(const VisionLayer& w, std::vector<float>& x, std::span<const int64_t> rows, std::span<const int64_t> cols,
             std::span<const int64_t> image_begin) const;
  std::vector<float> project(const std::vector<float>& hidden, std::span<const PixelValues> images) const;

  io::VisionConfig cfg_;
  VisionWeights w_;
  std::vector<float> freq_;  // [head_dim / 2]: theta^(-2j / head_dim)
};

}  // namespace quatre::vision
