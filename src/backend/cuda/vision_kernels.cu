// The Pixtral vision tower's kernels (core/backend.h's rope_2d, segment_attention, gelu), fp32 in and out:
//   rope_2d: a thread a (row, head, pair), its angle's cos and sin, q's and k's pair rotated;
//   segment_attention, two flash-style kernels, a block a (tile of query rows of one segment, head), the segment's
//     keys in tiles of 64 through shared memory, the online softmax per row (running max and sum), never an N x N
//     matrix:
//     - on the tensor cores: a warp a 16 query rows, S = Q·Kᵀ and O += P·V as BF16 mma.sync with fp32 sums, the
//       operands as 3 BF16 terms (fp32) or 1 (bf16_operands), P straight from S's accumulators (FlashAttention-2),
//       the softmax online_softmax.cuh's (as MLA's tensor-core kernels);
//     - on the CUDA cores, fp32: 4x4 register micro-tiles of 16x16 threads (head sizes the first does not take);
//   gelu: the exact (erf) GELU, element-wise.
// Products and sums that the CPU rounds one by one are written with __fmul_rn / __fadd_rn (no FMA contraction).
// Depends on CUDA only.
#include <algorithm>
#include <cmath>

#include "backend/cuda/device_math.cuh"
#include "backend/cuda/env_switch.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/online_softmax.cuh"

namespace quatre::cuda {
namespace {

// In every head of q and k: pair j turns by float(rows[t]) · freq[2j] (j < dh/4) or float(cols[t]) ·
// freq[2(j - dh/4) + 1]; the pair is columns (2j, 2j+1), or (j, j + dh/2) when half_pairs.
__global__ void rope_2d_kernel(float* q, float* k, int64_t N, int64_t H, int64_t dh, const float* freq,
                               const int32_t* rows, const int32_t* cols, bool half_pairs) {
  const int64_t half = dh / 2, quarter = dh / 4, n = N * H * half;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = i % half, head = i / half, t = head / H;  // head: t·H + h, whose columns start at head·dh
    const float angle = j < quarter ? __fmul_rn(static_cast<float>(rows[t]), freq[2 * j])
                                    : __fmul_rn(static_cast<float>(cols[t]), freq[2 * (j - quarter) + 1]);
    const float c = cosf(angle), s = sinf(angle);
    const int64_t a = head * dh + (half_pairs ? j : 2 * j), b = head * dh + (half_pairs ? j + half : 2 * j + 1);
    const auto turn = [&](float* x) {
      const float x0 = x[a], x1 = x[b];
      x[a] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
      x[b] = __fadd_rn(__fmul_rn(x1, c), __fmul_rn(x0, s));
    };
    turn(q);
    turn(k);
  }
}

__global__ void gelu_kernel(float* x, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = x[i];
    x[i] = __fmul_rn(__fmul_rn(0.5f, v), __fadd_rn(1.0f, erff(__fmul_rn(v, 0.70710678118654752f))));
  }
}

constexpr int kRows = 64;                     // query rows a block
constexpr int kKeys = 64;                     // keys a tile
constexpr int kThreads = 256;                 // 16 row groups (ty) x 16 key or column groups (tx)
constexpr int kPad = 4;                       // floats after each shared row: K reads of 8 lanes in distinct banks
static_assert(kKeys == kRows, "load_tile stages 64-row tiles of queries, keys and values alike");

// Shared bytes of the kernel for heads padded to DP columns: Q, K, V tiles [64][DP + kPad] and P [64][64 + kPad].
constexpr size_t segment_shared_bytes(int DP) {
  return (static_cast<size_t>(kRows + 2 * kKeys) * (DP + kPad) + static_cast<size_t>(kRows) * (kKeys + kPad)) *
         sizeof(float);
}

// dst[r][c] = src[row0 + r, col0 + c] for r < n_rows, c < dh; zeros elsewhere in the 64 x DP tile (padded rows and
// columns add nothing to the scores or the output, and stay finite). A thread keeps one column (DP divides kThreads)
// and steps down the rows kThreads / DP at a time.
template <int DP>
__device__ __forceinline__ void load_tile(float* dst, const float* src, int64_t row0, int n_rows, int64_t width,
                                          int64_t col0, int dh) {
  constexpr int kStep = kThreads / DP;
  const int r0 = static_cast<int>(threadIdx.x) / DP, c = static_cast<int>(threadIdx.x) % DP;
  const float* from = src + (row0 + r0) * width + col0 + c;
#pragma unroll
  for (int it = 0; it < kRows / kStep; ++it) {
    const int r = r0 + it * kStep;
    dst[r * (DP + kPad) + c] = r < n_rows && c < dh ? from[it * kStep * width] : 0.0f;
  }
}

// VW consecutive floats of shared memory (p aligned to VW floats).
template <int VW>
__device__ __forceinline__ void load_vec(const float* p, float (&out)[VW]) {
  if constexpr (VW == 4) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    out[0] = v.x, out[1] = v.y, out[2] = v.z, out[3] = v.w;
  } else if constexpr (VW == 2) {
    const float2 v = *reinterpret_cast<const float2*>(p);
    out[0] = v.x, out[1] = v.y;
  } else {
    out[0] = p[0];
  }
}

// The max (or sum) over the 16 lanes of a row group (tx: the lane's low four bits).
__device__ __forceinline__ float row_max(float v) {
#pragma unroll
  for (int o = 1; o < 16; o *= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float row_sum(float v) {
#pragma unroll
  for (int o = 1; o < 16; o *= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Block (tile, head): tile = tiles[4·blockIdx.x ..] = (q0, q1, k0, k1), query rows [q0, q1) of the segment [k0, k1).
// Thread (ty, tx) holds rows ty + 16i (i < 4): their scores against keys tx + 16j (j < 4) of a tile, and their output
// columns (16m + tx)·VW + w (m < NV, w < VW): C = DP/16 columns in vectors of VW. Its share of each row's sum l stays
// partial until the end (every lane of a row has the same running max).
template <int DP>
__global__ void __launch_bounds__(kThreads, DP >= 128 ? 1 : 2)
    segment_attention_kernel(const float* q, const float* k, const float* v, float* out, int64_t H, int dh,
                             const int32_t* tiles, float scale) {
  constexpr int S = DP + kPad, PS = kKeys + kPad;
  constexpr int C = DP / 16, VW = C < 4 ? C : 4, NV = C / VW;
  extern __shared__ float4 shared4[];
  float* qs = reinterpret_cast<float*>(shared4);  // [kRows][S]
  float* ks = qs + kRows * S;                      // [kKeys][S]
  float* vs = ks + kKeys * S;                      // [kKeys][S]
  float* ps = vs + kKeys * S;                      // [kRows][PS]
  const int tx = static_cast<int>(threadIdx.x) % 16, ty = static_cast<int>(threadIdx.x) / 16;
  const int32_t* tile = tiles + 4 * static_cast<int64_t>(blockIdx.x);
  const int32_t q0 = tile[0], q1 = tile[1], k_begin = tile[2], k_end = tile[3];
  const int64_t width = H * dh, col0 = blockIdx.y * static_cast<int64_t>(dh);
  load_tile<DP>(qs, q, q0, q1 - q0, width, col0, dh);

  float o[4][C], m[4], l[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    m[i] = -INFINITY, l[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < C; ++c) o[i][c] = 0.0f;
  }
  for (int32_t k0 = k_begin; k0 < k_end; k0 += kKeys) {
    const int n_keys = min(kKeys, k_end - k0);
    __syncthreads();  // the last tile's K, V and P are read
    load_tile<DP>(ks, k, k0, n_keys, width, col0, dh);
    load_tile<DP>(vs, v, k0, n_keys, width, col0, dh);
    __syncthreads();

    float s[4][4] = {};  // S = Q·Kᵀ
#pragma unroll 4
    for (int d = 0; d < DP; d += 4) {
      float4 qv[4], kv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) qv[i] = *reinterpret_cast<const float4*>(qs + (ty + 16 * i) * S + d);
#pragma unroll
      for (int j = 0; j < 4; ++j) kv[j] = *reinterpret_cast<const float4*>(ks + (tx + 16 * j) * S + d);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          s[i][j] = fmaf(qv[i].x, kv[j].x, s[i][j]);
          s[i][j] = fmaf(qv[i].y, kv[j].y, s[i][j]);
          s[i][j] = fmaf(qv[i].z, kv[j].z, s[i][j]);
          s[i][j] = fmaf(qv[i].w, kv[j].w, s[i][j]);
        }
      }
    }
    // Online softmax: the new running max of each row (finite: key k0 is in the segment), the old sums and outputs
    // scaled by exp(m_old - m_new) (0 on the first tile), P = exp(scale·s - m) into shared memory.
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        s[i][j] = tx + 16 * j < n_keys ? s[i][j] * scale : -INFINITY;
        mx = fmaxf(mx, s[i][j]);
      }
      const float m_new = fmaxf(m[i], row_max(mx));
      const float corr = expf(m[i] - m_new);
      m[i] = m_new;
      l[i] *= corr;
#pragma unroll
      for (int c = 0; c < C; ++c) o[i][c] *= corr;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float p = expf(s[i][j] - m_new);
        l[i] += p;
        ps[(ty + 16 * i) * PS + tx + 16 * j] = p;
      }
    }
    __syncthreads();

    // O += P·V over the tile's keys, four at a time (masked keys: P = 0 and V rows of zeros).
#pragma unroll 2
    for (int key = 0; key < kKeys; key += 4) {
      float4 p[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) p[i] = *reinterpret_cast<const float4*>(ps + (ty + 16 * i) * PS + key);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
#pragma unroll
        for (int mv = 0; mv < NV; ++mv) {
          float vv[VW];
          load_vec<VW>(vs + (key + e) * S + (16 * mv + tx) * VW, vv);
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const float pe = e == 0 ? p[i].x : e == 1 ? p[i].y : e == 2 ? p[i].z : p[i].w;
#pragma unroll
            for (int w = 0; w < VW; ++w) o[i][mv * VW + w] = fmaf(pe, vv[w], o[i][mv * VW + w]);
          }
        }
      }
    }
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) l[i] = row_sum(l[i]);  // every lane, before any leaves
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int32_t row = q0 + ty + 16 * i;
    if (row >= q1) continue;
    float* dst = out + row * width + col0;
#pragma unroll
    for (int mv = 0; mv < NV; ++mv) {
#pragma unroll
      for (int w = 0; w < VW; ++w) {
        const int c = (16 * mv + tx) * VW + w;
        if (c < dh) dst[c] = o[i][mv * VW + w] / l[i];
      }
    }
  }
}

template <int DP>
cudaError_t launch_segment_attention_dp(const float* q, const float* k, const float* v, float* out, int64_t H,
                                        int64_t dh, const int32_t* tiles, int64_t n_tiles, float scale,
                                        cudaStream_t stream) {
  const auto kernel = segment_attention_kernel<DP>;
  constexpr size_t shared = segment_shared_bytes(DP);
  if constexpr (shared > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared));
    if (e != cudaSuccess) return e;
  }
  const dim3 grid(static_cast<unsigned>(n_tiles), static_cast<unsigned>(H));
  kernel<<<grid, kThreads, shared, stream>>>(q, k, v, out, H, static_cast<int>(dh), tiles, scale);
  return cudaGetLastError();
}


// ---- On the tensor cores ----
// A block of WARPS warps takes a tile of 16·WARPS query rows; warp w owns rows q0 + 16w + (0..15), thread (g =
// lane / 4, c = lane % 4) rows g and g + 8 of them (mma.cuh's fragment layout). Per 64-key tile, k and v go through
// shared memory as NT BF16 terms each ([NT][64][DP + 8]: 16 bytes of pad put ldmatrix's eight rows in distinct
// banks); the warp's scores S [16 x 64] stay in its accumulators, P = exp(S - m) is split into NT terms there and
// multiplies V (FlashAttention-2's register reuse). A product of terms i and j is taken for i + j < NT: with NT = 3
// the terms below 2^-16 of the leading product are left out (fp32 up to summation order).
constexpr int kTcKeys = 64;

template <int DP, int NT>
constexpr size_t tc_shared_bytes() {
  return 2 * static_cast<size_t>(NT) * kTcKeys * (DP + 8) * sizeof(uint16_t);
}

// Four floats at p (16-byte aligned when `aligned`, else read one by one).
__device__ __forceinline__ float4 load4(const float* p, bool aligned) {
  if (aligned) return *reinterpret_cast<const float4*>(p);
  return make_float4(p[0], p[1], p[2], p[3]);
}

// dst [NT][64][DP + 8] = the BF16 terms of src[row0 + r, col0 + d] for r < n_keys, d < dh (dh % 4 == 0); zeros
// elsewhere (finite: padded keys are masked in the scores, padded columns add nothing). A thread's loads go first.
template <int DP, int NT, int WARPS>
__device__ __forceinline__ void stage_terms(uint16_t* dst, const float* src, int64_t row0, int n_keys, int64_t width,
                                            int64_t col0, int dh, bool aligned) {
  constexpr int kVecs = kTcKeys * DP / 4, kPer = kVecs / (32 * WARPS), S = DP + 8;
  static_assert(kVecs % (32 * WARPS) == 0, "whole float4s a thread");
  float4 val[kPer];
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int idx = static_cast<int>(threadIdx.x) + i * 32 * WARPS, r = idx / (DP / 4), d = 4 * (idx % (DP / 4));
    val[i] = r < n_keys && d < dh ? load4(src + (row0 + r) * width + col0 + d, aligned) : make_float4(0, 0, 0, 0);
  }
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int idx = static_cast<int>(threadIdx.x) + i * 32 * WARPS, r = idx / (DP / 4), d = 4 * (idx % (DP / 4));
    uint32_t lo[NT], hi[NT];
    split_bf16<NT>(val[i].x, val[i].y, lo);
    split_bf16<NT>(val[i].z, val[i].w, hi);
#pragma unroll
    for (int t = 0; t < NT; ++t) *reinterpret_cast<uint2*>(dst + (t * kTcKeys + r) * S + d) = make_uint2(lo[t], hi[t]);
  }
}

// Block (tile, head) as segment_attention_kernel's.
template <int DP, int NT, int WARPS>
__global__ void __launch_bounds__(32 * WARPS) segment_attention_tc_kernel(const float* q, const float* k, const float* v,
                                                                          float* out, int64_t H, int dh,
                                                                          const int32_t* tiles, float scale,
                                                                          bool aligned) {
  constexpr int S = DP + 8, KC = DP / 16, ND = DP / 8, KT = kTcKeys / 8;  // k chunks of S; n-tiles of O and of S
  static_assert(DP % 32 == 0, "pairs of 16-wide k chunks");
  extern __shared__ float4 shared4[];
  uint16_t* ks = reinterpret_cast<uint16_t*>(shared4);  // [NT][64][S]
  uint16_t* vs = ks + NT * kTcKeys * S;                  // [NT][64][S]
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, c = lane % 4;
  const int32_t* tile = tiles + 4 * static_cast<int64_t>(blockIdx.x);
  const int32_t q0 = tile[0], q1 = tile[1], k_begin = tile[2], k_end = tile[3];
  const int64_t width = H * dh, col0 = blockIdx.y * static_cast<int64_t>(dh);
  const int32_t row[2] = {q0 + 16 * warp + g, q0 + 16 * warp + g + 8};
  const bool idle = q0 + 16 * warp >= q1;  // the whole warp: it only helps stage k and v

  // Q's A fragments: a[0] (row g, columns 16kk + 2c, +1), a[1] (row g + 8), a[2], a[3] (the same, 8 columns on).
  uint32_t qa[NT][KC][4];
#pragma unroll
  for (int kk = 0; kk < KC; ++kk) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int d = 16 * kk + 8 * (i / 2) + 2 * c, r = row[i % 2];
      float2 x = make_float2(0.0f, 0.0f);
      if (r < q1 && d < dh) {
        const float* p = q + r * width + col0 + d;
        x = aligned ? *reinterpret_cast<const float2*>(p) : make_float2(p[0], p[1]);
      }
      uint32_t t[NT];
      split_bf16<NT>(x.x, x.y, t);
#pragma unroll
      for (int n = 0; n < NT; ++n) qa[n][kk][i] = t[n];
    }
  }

  float o[ND][4] = {}, m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  for (int32_t k0 = k_begin; k0 < k_end; k0 += kTcKeys) {
    const int n_keys = min(kTcKeys, k_end - k0);
    __syncthreads();  // the last tile's terms are read
    stage_terms<DP, NT, WARPS>(ks, k, k0, n_keys, width, col0, dh, aligned);
    stage_terms<DP, NT, WARPS>(vs, v, k0, n_keys, width, col0, dh, aligned);
    __syncthreads();
    if (idle) continue;

    // S = Q·Kᵀ: s[j] holds rows g, g + 8 at keys 8j + 2c, + 1.
    float s[KT][4] = {};
#pragma unroll
    for (int tk = 0; tk < NT; ++tk) {
#pragma unroll
      for (int j = 0; j < KT; ++j) {
#pragma unroll
        for (int kp = 0; kp < KC / 2; ++kp) {
          uint32_t b[4];  // keys 8j.., columns 32kp + 8i ..: b0, b1 of chunks 2kp and 2kp + 1
          ldmatrix_x4(b, ks + (tk * kTcKeys + 8 * j + lane % 8) * S + 32 * kp + 8 * (lane / 8));
#pragma unroll
          for (int tq = 0; tq + tk < NT; ++tq) {
            mma_bf16(s[j], qa[tq][2 * kp], b[0], b[1]);
            mma_bf16(s[j], qa[tq][2 * kp + 1], b[2], b[3]);
          }
        }
      }
    }

    // The online softmax (online_softmax.cuh): keys past the segment masked, the running max and sum moved on, P in
    // place of S; the output rows scaled by corr (0 on the first tile).
    float corr[2];
    online_softmax_tile<KT>(s, [&](int, int key) { return key < n_keys; }, scale, m, l, corr);
#pragma unroll
    for (int nd = 0; nd < ND; ++nd) {
#pragma unroll
      for (int e = 0; e < 4; ++e) o[nd][e] *= corr[e / 2];
    }

    // O += P·V, 16 keys a step: P's A fragment is S's accumulators of key tiles 2kk and 2kk + 1.
#pragma unroll
    for (int kk = 0; kk < KT / 2; ++kk) {
      uint32_t pa[NT][4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float* src = s[2 * kk + i / 2] + 2 * (i % 2);  // a0 row g, a1 row g + 8; a2, a3 8 keys on
        uint32_t t[NT];
        split_bf16<NT>(src[0], src[1], t);
#pragma unroll
        for (int n = 0; n < NT; ++n) pa[n][i] = t[n];
      }
#pragma unroll
      for (int tv = 0; tv < NT; ++tv) {
#pragma unroll
        for (int np = 0; np < DP / 16; ++np) {
          uint32_t b[4];  // keys 16kk + 8(i % 2) .., columns 16np + 8(i / 2) ..: b0, b1 of n-tiles 2np and 2np + 1
          ldmatrix_x4_trans(b, vs + (tv * kTcKeys + 16 * kk + 8 * ((lane / 8) % 2) + lane % 8) * S + 16 * np +
                                   8 * (lane / 16));
#pragma unroll
          for (int tp = 0; tp + tv < NT; ++tp) {
            mma_bf16(o[2 * np], pa[tp], b[0], b[1]);
            mma_bf16(o[2 * np + 1], pa[tp], b[2], b[3]);
          }
        }
      }
    }
  }
  if (idle) return;

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float sum = l[h];  // the row's whole sum (online_softmax_tile adds the quad's)
    if (row[h] >= q1) continue;
    float* dst = out + row[h] * width + col0;
#pragma unroll
    for (int nd = 0; nd < ND; ++nd) {
      const int d = 8 * nd + 2 * c;
      if (d < dh) *reinterpret_cast<float2*>(dst + d) = make_float2(o[nd][2 * h] / sum, o[nd][2 * h + 1] / sum);
    }
  }
}

template <int DP, int NT, int WARPS>
cudaError_t launch_segment_attention_tc(const float* q, const float* k, const float* v, float* out, int64_t H,
                                        int64_t dh, const int32_t* tiles, int64_t n_tiles, float scale,
                                        cudaStream_t stream) {
  const auto kernel = segment_attention_tc_kernel<DP, NT, WARPS>;
  constexpr size_t shared = tc_shared_bytes<DP, NT>();
  if constexpr (shared > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared));
    if (e != cudaSuccess) return e;
  }
  const auto is16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const bool aligned = is16(q) && is16(k) && is16(v) && is16(out);
  const dim3 grid(static_cast<unsigned>(n_tiles), static_cast<unsigned>(H));
  kernel<<<grid, 32 * WARPS, shared, stream>>>(q, k, v, out, H, static_cast<int>(dh), tiles, scale, aligned);
  return cudaGetLastError();
}

template <int NT, int WARPS>
cudaError_t launch_tc_nt(const float* q, const float* k, const float* v, float* out, int64_t H, int64_t dh,
                         const int32_t* tiles, int64_t n_tiles, float scale, cudaStream_t stream) {
  if (dh <= 32) return launch_segment_attention_tc<32, NT, WARPS>(q, k, v, out, H, dh, tiles, n_tiles, scale, stream);
  if (dh <= 64) return launch_segment_attention_tc<64, NT, WARPS>(q, k, v, out, H, dh, tiles, n_tiles, scale, stream);
  if constexpr (NT == 1) {
    return launch_segment_attention_tc<128, NT, WARPS>(q, k, v, out, H, dh, tiles, n_tiles, scale, stream);
  }
  return cudaErrorInvalidValue;
}

int tc_test_mode = -1, tc_test_rows = 0;

bool tc_applies(int64_t dh, bool bf16_operands) {
  static const bool env_on = env_switch_on("QUATRE_CUDA_VISION_TC");
  // Whole float4s of a head (a multiple of 4: the loads and stores never cross into the next head).
  return switch_on(tc_test_mode, env_on) && dh % 4 == 0 && (dh <= 64 || (bf16_operands && dh <= 128));
}

}  // namespace

cudaError_t launch_rope_2d(float* q, float* k, int64_t N, int64_t H, int64_t dh, const float* freq,
                           const int32_t* rows, const int32_t* cols, bool half_pairs, cudaStream_t stream) {
  const int64_t n = N * H * (dh / 2);
  if (n == 0) return cudaSuccess;
  rope_2d_kernel<<<std::min(blocks_for(n, 256), 4096u), 256, 0, stream>>>(q, k, N, H, dh, freq, rows, cols,
                                                                          half_pairs);
  return cudaGetLastError();
}

int segment_attention_tile_rows(int64_t dh, bool bf16_operands, int64_t N, int64_t H) {
  if (!tc_applies(dh, bf16_operands)) return kRows;
  static const int64_t env_rows = env_int("QUATRE_CUDA_VISION_TILE_ROWS", 0);
  const int64_t forced = tc_test_rows != 0 ? tc_test_rows : env_rows;
  if (forced == 64 || forced == 128) return static_cast<int>(forced);
  // 128 rows (8 warps: k and v staged once for twice the queries) where that still gives every SM two blocks.
  static const int sms = [] {
    int device = 0, n = 0;
    if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
      return 132;
    }
    return n;
  }();
  return N / 128 * H >= 2 * sms ? 128 : 64;
}

void set_segment_attention_tc_for_tests(int mode, int rows) {
  tc_test_mode = mode;
  tc_test_rows = rows;
}

cudaError_t launch_segment_attention(const float* q, const float* k, const float* v, float* out, int64_t H,
                                     int64_t dh, const int32_t* tiles, int64_t n_tiles, int tile_rows, float scale,
                                     bool bf16_operands, cudaStream_t stream) {
  if (n_tiles == 0 || H == 0) return cudaSuccess;
  if (dh < 1 || dh > kSegmentAttentionMaxHeadDim || H > 65535 || n_tiles > 0x7fffffff) return cudaErrorInvalidValue;
  if (tc_applies(dh, bf16_operands)) {
    if (tile_rows != 64 && tile_rows != 128) return cudaErrorInvalidValue;
    const bool eight = tile_rows == 128;
    if (bf16_operands) {
      return eight ? launch_tc_nt<1, 8>(q, k, v, out, H, dh, tiles, n_tiles, scale, stream)
                   : launch_tc_nt<1, 4>(q, k, v, out, H, dh, tiles, n_tiles, scale, stream);
    }
    return eight ? launch_tc_nt<3, 8>(q, k, v, out, H, dh, tiles, n_tiles, scale, stream)
                 : launch_tc_nt<3, 4>(q, k, v, out, H, dh, tiles, n_tiles, scale, stream);
  }
  if (tile_rows != kRows) return cudaErrorInvalidValue;
  if (dh <= 16) return launch_segment_attention_dp<16>(q, k, v, out, H, dh, tiles, n_tiles, scale, stream);
  if (dh <= 32) return launch_segment_attention_dp<32>(q, k, v, out, H, dh, tiles, n_tiles, scale, stream);
  if (dh <= 64) return launch_segment_attention_dp<64>(q, k, v, out, H, dh, tiles, n_tiles, scale, stream);
  return launch_segment_attention_dp<128>(q, k, v, out, H, dh, tiles, n_tiles, scale, stream);
}

cudaError_t launch_gelu(float* x, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  gelu_kernel<<<std::min(blocks_for(n, 256), 4096u), 256, 0, stream>>>(x, n);
  return cudaGetLastError();
}

}  // namespace quatre::cuda
