// The online softmax of flash-style attention over mma.sync score tiles, shared by MLA's key pass (mla_tc.cu) and
// the naive-form prompt kernel (mla_prefill.cu). A warp holds 16 rows of scores in the m16n8 accumulator layout:
// s[nt][0..1] are row g (= lane / 4) at columns 8nt + 2c, + 1 (c = lane % 4), s[nt][2..3] row g + 8. Depends on CUDA
// only.
#pragma once

#include <cmath>

namespace quatre::cuda {

// Max and sum over the four lanes of a row (lanes 4g .. 4g + 3).
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// One tile of NT n8 score tiles into the running (m, l) of rows g (index 0) and g + 8 (index 1): each score is
// taken as s · scale where valid(row, column) (column of the tile: 8nt + 2c + e), else -inf; m moves to the new
// maximum (finite: the caller's first tile has a valid column in every row), the scores become exp(s · scale - m)
// (one FMA and one exp2 each), l = l · corr + their sum; corr = exp(m_old - m) is what the caller's running output
// must be multiplied by. m is in scaled units (the split combines read it).
template <int NT, typename Valid>
__device__ __forceinline__ void online_softmax_tile(float (&s)[NT][4], Valid valid, float scale, float (&m)[2],
                                                    float (&l)[2], float (&corr)[2]) {
  constexpr float kLog2e = 1.4426950408889634f;
  const int c = static_cast<int>(threadIdx.x % 32) % 4;
  const float scale_log2 = scale * kLog2e;
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    float mx = -INFINITY;  // of the raw scores: scale > 0 and rounding are monotonic, so mx · scale is the scaled max
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float& v = s[nt][2 * hr + e];
        if (!valid(hr, 8 * nt + 2 * c + e)) v = -INFINITY;
        mx = fmaxf(mx, v);
      }
    }
    const float m_new = fmaxf(m[hr], quad_max(mx) * scale);
    corr[hr] = exp2f((m[hr] - m_new) * kLog2e);
    const float shift = -m_new * kLog2e;
    float sum = 0.0f;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float& v = s[nt][2 * hr + e];
        v = exp2f(fmaf(v, scale_log2, shift));
        sum += v;
      }
    }
    l[hr] = l[hr] * corr[hr] + quad_sum(sum);
    m[hr] = m_new;
  }
}

}  // namespace quatre::cuda
