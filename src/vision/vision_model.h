// VisionModel: the Pixtral encoder (MODEL.md §7.3), the projector pre-norm, the 2x2 patch merger and the projector
// MLP (§7.4-§7.6), written once against core::Backend (rms_norm, matmul, ffn, rope_2d, segment_attention, gelu), so
// it runs on the CPU or on the GPU. Images of one call form one sequence with block-diagonal attention: a patch never
// sees another image. Depends on core, io, vision.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "core/backend.h"
#include "io/checkpoint.h"
#include "vision/preprocess.h"

namespace quatre::vision {

struct VisionLayer {
  Weight attn_norm, ffn_norm;  // [Hv]
  Weight q, k, v, o;           // [Hv, Hv]
  FfnWeights ffn;              // gate, up [Iv, Hv]; down [Hv, Iv]
};

// The tower's weights as the backend runs them: in their stored dtype (the CPU backend reads the checkpoint's
// mapping, which must outlive them; a device backend copies them).
struct VisionWeights {
  Weight patch_conv;  // [Hv, C*P*P], columns in (c, ky, kx) order
  Weight ln_pre;      // [Hv]
  std::vector<VisionLayer> layers;
  bool hf_qk_rows = false;  // q/k rows in HF's rotate-half order (else native interleaved pairs), MODEL.md §2.5
  Weight projector_norm;    // [Hv]
  // [Hv, M*M*Hv] with its columns reordered to (dy, dx, ch) from the checkpoint's (ch, dy, dx): the merged token is
  // then the M*M patch rows side by side (a gather, no transpose).
  Weight merger;
  Weight linear_1, linear_2;  // [D, Hv], [D, D]
  std::vector<std::shared_ptr<std::vector<std::byte>>> owned;  // host copies made at load (the merger's reorder)

  // Throws LoadError when the checkpoint has no vision tower.
  static VisionWeights load(const io::Checkpoint& checkpoint, Backend& backend);
};

struct VisionOptions {
  // The attention's q, k, v and softmax weights rounded to BF16 where they meet (SegmentAttentionArgs::bf16_operands:
  // CUDA's tensor cores at one term, vLLM's numerics); false: fp32. quatre follows --attention-operands.
  bool bf16_attention_operands = false;
};

class VisionModel {
 public:
  // The tower on `backend` (its own: calls run one at a time, beside whatever the text model's backend runs).
  // Throws LoadError when the checkpoint has no vision tower.
  VisionModel(const io::Checkpoint& checkpoint, std::unique_ptr<Backend> backend, VisionOptions options = {});
  // The tower of `config` with weights already prepared on `backend` (e.g. drawn there: quatre bench --vision).
  VisionModel(const io::VisionConfig& config, VisionWeights weights, std::unique_ptr<Backend> backend,
              VisionOptions options = {});

  // One run on a blank image of the largest size (a device backend's scratch for it is then held: a server sizes
  // its KV cache after this, around it).
  void warm_up() const;

  // The tower's last hidden state, every image's patches in order: [Σ (h'/P)(w'/P), Hv].
  std::vector<float> encode(std::span<const PixelValues> images) const;
  // What is spliced at the [IMG] positions: [Σ (h'/PM)(w'/PM), D] (the projector output).
  std::vector<float> image_features(std::span<const PixelValues> images) const;
  // Both, from one tower run. Throws InvalidRequest for an image of a size the encoder does not take.
  void run(std::span<const PixelValues> images, std::vector<float>* hidden, std::vector<float>* features) const;

  const io::VisionConfig& config() const { return cfg_; }
  int64_t text_hidden() const { return w_.linear_2.w.dim(0); }
  Device device() const { return be_->device(); }

 private:
  Tensor patch_embed(std::span<const PixelValues> images, Arena& a) const;  // [N, Hv]
  void layer(const VisionLayer& w, Tensor x /*[N,Hv]*/, const Rope2dArgs& rope, std::span<const int32_t> image_begin,
             Arena& a) const;
  Tensor project(const Tensor& hidden, std::span<const PixelValues> images, Arena& a) const;  // [N/M², D]

  io::VisionConfig cfg_;
  VisionOptions options_;
  std::unique_ptr<Backend> be_;
  VisionWeights w_;
  std::vector<float> freq_;  // [head_dim / 2]: theta^(-2j / head_dim)
  mutable std::mutex run_;   // one run at a time on be_ and arena_
  // Scratch of the runs, kept from one to the next (reset, not freed: on a GPU a free waits for the whole device,
  // beside the text model's work); it grows to the largest run's.
  mutable std::unique_ptr<Arena> arena_;
};

}  // namespace quatre::vision
