// CpuBackend's vision-tower ops (core/backend.h): Pixtral's 2-D RoPE, attention inside segments (the images of a
// call), and the exact GELU, in fp32, threaded over rows. Depends on core only.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/kernels.h"
#include "core/error.h"

namespace quatre::cpu {
namespace {

void check_host(const Tensor& t, const char* what) {
  if (t.device() != Device::kCpu) throw InvalidRequest(std::string(what) + ": a host tensor expected");
}

}  // namespace

void CpuBackend::rope_2d(Tensor q, Tensor k, const Rope2dArgs& args) {
  check_rope_2d_args(q, k, args);
  check_host(q, "rope_2d q");
  check_host(k, "rope_2d k");
  const auto N = static_cast<int64_t>(args.rows.size());
  const int64_t dh = args.head_dim, half = dh / 2, width = args.n_heads * dh;
  pool_.parallel_for(N, 16, [&](int64_t begin, int64_t end, int) {
    std::vector<float> cos(static_cast<size_t>(half)), sin(static_cast<size_t>(half));
    for (int64_t t = begin; t < end; ++t) {
      for (int64_t j = 0; j < half; ++j) {  // fp32 angle, as transformers' float32 table
        const float angle = j < dh / 4 ? static_cast<float>(args.rows[static_cast<size_t>(t)]) * args.freq[static_cast<size_t>(2 * j)]
                                       : static_cast<float>(args.cols[static_cast<size_t>(t)]) * args.freq[static_cast<size_t>(2 * (j - dh / 4) + 1)];
        cos[static_cast<size_t>(j)] = std::cos(angle);
        sin[static_cast<size_t>(j)] = std::sin(angle);
      }
      for (float* m : {q.data_as<float>(), k.data_as<float>()}) {
        for (int64_t h = 0; h < args.n_heads; ++h) {
          float* p = m + t * width + h * dh;
          for (int64_t j = 0; j < half; ++j) {
            const int64_t a = args.half_pairs ? j : 2 * j, b = args.half_pairs ? j + half : 2 * j + 1;
            const float x0 = p[a], x1 = p[b], c = cos[static_cast<size_t>(j)], s = sin[static_cast<size_t>(j)];
            p[a] = x0 * c - x1 * s;
            p[b] = x1 * c + x0 * s;
          }
        }
      }
    }
  });
}

// One (query row, head) at a time: the scores against its segment's keys, softmax, then Σ p·v.
Tensor CpuBackend::segment_attention(const SegmentAttentionArgs& args, Arena& a) {
  check_segment_attention_args(args);
  check_host(args.q, "segment_attention q");
  check_host(args.k, "segment_attention k");
  check_host(args.v, "segment_attention v");
  const int64_t N = args.q.dim(0), width = args.q.dim(1), H = args.n_heads, dh = width / H;
  Tensor out = a.tensor(DType::F32, {N, width});
  std::vector<int32_t> segment_of(static_cast<size_t>(N));
  for (size_t i = 0; i + 1 < args.segment_begin.size(); ++i) {
    std::fill(segment_of.begin() + args.segment_begin[i], segment_of.begin() + args.segment_begin[i + 1], static_cast<int32_t>(i));
  }
  const float* q = args.q.data_as<float>();
  const float* k = args.k.data_as<float>();
  const float* v = args.v.data_as<float>();
  float* o = out.data_as<float>();
  pool_.parallel_for(N * H, 1, [&](int64_t begin, int64_t end, int) {
    std::vector<float> p;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t t = i / H, h = i % H;
      const int32_t s = segment_of[static_cast<size_t>(t)];
      const int64_t b0 = args.segment_begin[static_cast<size_t>(s)], b1 = args.segment_begin[static_cast<size_t>(s) + 1];
      p.resize(static_cast<size_t>(b1 - b0));
      const float* qt = q + t * width + h * dh;
      for (int64_t u = b0; u < b1; ++u) p[static_cast<size_t>(u - b0)] = args.scale * dot(qt, k + u * width + h * dh, dh);
      softmax_inplace(p.data(), b1 - b0);
      float* ot = o + t * width + h * dh;
      std::fill(ot, ot + dh, 0.0f);
      for (int64_t u = b0; u < b1; ++u) {
        const float pu = p[static_cast<size_t>(u - b0)];
        const float* vu = v + u * width + h * dh;
        for (int64_t c = 0; c < dh; ++c) ot[c] += pu * vu[c];
      }
    }
  });
  return out;
}

void CpuBackend::gelu(Tensor x) {
  check_host(x, "gelu");
  if (x.dtype() != DType::F32) throw InvalidRequest(std::string("gelu: an F32 tensor expected, got ") + std::string(dtype_name(x.dtype())));
  float* p = x.data_as<float>();
  pool_.parallel_for(x.numel(), 4096, [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) p[i] = 0.5f * p[i] * (1.0f + std::erf(p[i] * 0.70710678118654752f));
  });
}

}  // namespace quatre::cpu
