// Position-dependent constants of the text decoder, computed the way transformers 5.17 does (MODEL.md §4):
// YaRN inverse frequencies in fp32, the cos/sin attention factor (asserted 1), the Llama-4 query
// temperature and the softmax scale with its two conventions. Depends on core, io/model_config.
#pragma once

#include <cstdint>
#include <vector>

#include "io/model_config.h"

namespace quatre::model {

// inv_freq [Dr/2] for the rope slice (dim = qk_rope_head_dim), as transformers' _compute_yarn_parameters
// computes it in fp32: pos_freq = theta^(2i/dim), correction range floor/ceil of
// dim·ln(L0/(2π·beta))/(2·ln theta) clamped to [0, dim-1], a linear ramp between them, and
// inv_freq = interp·ramp + extrap·(1-ramp) (interp = extrap / factor). Plain RoPE when not YaRN.
std::vector<float> rope_inv_freq(const io::TextConfig& text);

// The YaRN correction range (low, high) before the ramp, for tests and messages.
struct YarnRange {
  double low = 0;
  double high = 0;
};
YarnRange yarn_correction_range(const io::TextConfig& text);

// transformers' get_mscale: 1 if factor <= 1 else 0.1·m·ln(factor) + 1.
double yarn_get_mscale(double factor, double m);
// The factor transformers multiplies cos/sin by: mscale(factor, mscale)/mscale(factor, mscale_all_dim) when
// both are set, else mscale(factor, 1). 1 for every Mistral Small 4 config; the forward requires that.
double yarn_attention_factor(const io::RopeConfig& rope);
// Throws LoadError unless the cos/sin factor is 1 (within 1e-12), naming mscale and mscale_all_dim.
void check_rope_supported(const io::TextConfig& text);

// 1 + beta·ln(1 + floor(pos / original_max)) in fp32 as transformers computes it; 1 when beta is 0.
float llama4_query_temperature(int64_t position, const io::RopeConfig& rope);

// The two conventions of MODEL.md §0.1 / §4.3 for the factor on q·k.
enum class SoftmaxScale : uint8_t {
  kRelease,       // Mistral's params.json (yarn.apply_scale=false): 1/sqrt(Dn+Dr); × mscale² only when a
                  // params.json says apply_scale=true
  kTransformers,  // transformers >= 5.17 (yarn_apply_mscale): 1/sqrt(Dn+Dr) × mscale(factor, mscale_all_dim)²
};
float softmax_scale(const io::TextConfig& text, SoftmaxScale convention);

}  // namespace quatre::model
