// CudaBackend's vision-tower ops (core/backend.h): Pixtral's 2-D RoPE, attention inside segments (the images of a
// call) and the exact GELU. Checks on the host, the host metadata up through the staging ring, one launch each
// (vision_kernels.cu). Depends on core and the CUDA runtime.
#include "backend/cuda/cuda_backend.h"

#include <algorithm>
#include <cstdint>

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include "backend/cuda/kernels.h"
#include "backend/cuda/op_args.h"
#include "core/error.h"

namespace quatre::cuda {

void CudaBackend::rope_2d(Tensor q, Tensor k, const Rope2dArgs& args) {
  check_rope_2d_args(q, k, args);
  check_f32(q, "rope_2d q");
  check_f32(k, "rope_2d k");
  const auto N = static_cast<int64_t>(args.rows.size());
  const OpScope scope(profiler_, "rope_2d", static_cast<double>(2 * (q.bytes() + k.bytes())));
  reserve_uploads(upload_span(args.freq.size_bytes()) + upload_span(args.rows.size_bytes()) +
                  upload_span(args.cols.size_bytes()));
  const float* freq = upload(args.freq);
  const int32_t* rows = upload(args.rows);
  const int32_t* cols = upload(args.cols);
  launched(launch_rope_2d(q.data_as<float>(), k.data_as<float>(), N, args.n_heads, args.head_dim, freq, rows, cols,
                          args.half_pairs, as_stream(stream_)),
           "rope_2d");
}

// The work goes up as tiles of at most segment_attention_tile_rows query rows, each inside one segment (whose keys
// it reads): a block a (tile, head).
Tensor CudaBackend::segment_attention(const SegmentAttentionArgs& args, Arena& a) {
  check_segment_attention_args(args);
  check_f32(args.q, "segment_attention q");
  check_f32(args.k, "segment_attention k");
  check_f32(args.v, "segment_attention v");
  const int64_t N = args.q.dim(0), width = args.q.dim(1), H = args.n_heads, dh = width / H;
  if (dh > kSegmentAttentionMaxHeadDim || H > 65535) {
    throw InvalidRequest(fmt::format("segment_attention: head_dim {} with {} heads (the CUDA kernel takes head_dim up "
                                     "to {} and at most 65535 heads)", dh, H, kSegmentAttentionMaxHeadDim));
  }
  Tensor out = a.tensor(DType::F32, {N, width});  // [N, H*dh]
  const std::span<const int32_t> b = args.segment_begin;
  const int rows = segment_attention_tile_rows(dh, args.bf16_operands, N, H);
  attention_tiles_.clear();
  double key_rows = 0;  // keys read per head, over all tiles (the profile's bytes)
  for (size_t s = 0; s + 1 < b.size(); ++s) {
    for (int64_t q0 = b[s]; q0 < b[s + 1]; q0 += rows) {
      const int64_t q1 = std::min<int64_t>(q0 + rows, b[s + 1]);
      attention_tiles_.insert(attention_tiles_.end(), {static_cast<int32_t>(q0), static_cast<int32_t>(q1), b[s], b[s + 1]});
      key_rows += b[s + 1] - b[s];
    }
  }
  const auto n_tiles = static_cast<int64_t>(attention_tiles_.size() / 4);
  const OpScope scope(profiler_, "segment_attention", (2 * key_rows + 2 * static_cast<double>(N)) * static_cast<double>(width) * 4);
  const int32_t* tiles = upload(std::span<const int32_t>(attention_tiles_));
  launched(launch_segment_attention(args.q.data_as<float>(), args.k.data_as<float>(), args.v.data_as<float>(),
                                    out.data_as<float>(), H, dh, tiles, n_tiles, rows, args.scale, args.bf16_operands,
                                    as_stream(stream_)),
           "segment_attention");
  return out;
}

void CudaBackend::gelu(Tensor x) {
  check_f32(x, "gelu input");
  const OpScope scope(profiler_, "gelu", static_cast<double>(2 * x.bytes()));
  launched(launch_gelu(x.data_as<float>(), x.numel(), as_stream(stream_)), "gelu");
}

}  // namespace quatre::cuda
