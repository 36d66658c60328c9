// Routing and expert grouping on the device: softmax + top-K + renormalisation per token, the alignment of
// (token, k) pairs into per-expert row groups (no host round trip; for few tokens in the routing's launch), and the
// per-token sum of expert outputs.
// Depends on CUDA only.
#include <algorithm>

#include "backend/cuda/device_math.cuh"
#include "backend/cuda/pdl.cuh"

namespace quatre::cuda {
namespace {

// One warp per token. p_e = exp(l_e - max) / Σ (the sum in index order by lane 0, as the CPU backend); the K
// largest p by K warp-wide argmax passes (ties: the lower index), each taking its winner out.
constexpr int kRouteWarps = 4;

// Token t's top K by warp `lane`'s warp (every lane of it calls this).
__device__ __forceinline__ void route_token(const float* logits, int64_t t, int64_t E, int64_t K, float scaling,
                                            int lane, int32_t* ids, float* gates) {
  const float* l = logits + t * E;
  float m = -INFINITY;
  for (int64_t e = lane; e < E; e += 32) m = fmaxf(m, l[e]);
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  float sum = 0;
  if (lane == 0) {
    for (int64_t e = 0; e < E; ++e) sum += expf(l[e] - m);
  }
  sum = __shfl_sync(0xffffffffu, sum, 0);
  uint32_t taken = 0;  // bit i: expert lane + 32 i already chosen
  float total = 0;
  for (int64_t k = 0; k < K; ++k) {
    float best_p = -1.0f;
    int32_t best = -1;
    for (int64_t e = lane, i = 0; e < E; e += 32, ++i) {
      if ((taken >> i) & 1u) continue;
      const float p = expf(l[e] - m) / sum;
      if (p > best_p) best_p = p, best = static_cast<int32_t>(e);
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float other_p = __shfl_xor_sync(0xffffffffu, best_p, o);
      const int32_t other = __shfl_xor_sync(0xffffffffu, best, o);
      if (other >= 0 && (other_p > best_p || (other_p == best_p && (best < 0 || other < best)))) best_p = other_p, best = other;
    }
    if (best >= 0 && best % 32 == lane) taken |= 1u << (best / 32);
    if (lane == 0) ids[t * K + k] = best, gates[t * K + k] = best_p;
    total += best_p;
  }
  if (lane == 0) {
    const float denominator = total + 1e-20f;
    for (int64_t k = 0; k < K; ++k) gates[t * K + k] = gates[t * K + k] / denominator * scaling;
  }
}

__global__ void route_kernel(const float* logits, int64_t T, int64_t E, int64_t K, float scaling, int32_t* ids,
                             float* gates) {
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kRouteWarps + warp;
  if (t < T) route_token(logits, t, E, K, scaling, lane, ids, gates);
}

// One block. counts -> padded offsets (an exclusive scan by the first warp, each lane over a run of experts) -> each
// expert's groups marked by its own thread -> each pair placed by an atomic cursor of its expert. Row order inside
// an expert's group is not fixed; every row's result is independent of its place.
__device__ __forceinline__ void align_pairs(const int32_t* ids, int64_t n_pairs, int64_t K, int64_t E, int G,
                                            int64_t max_rows, int32_t* sorted_token, int32_t* sorted_pair,
                                            int32_t* group_expert) {
  extern __shared__ int32_t shared[];
  int32_t* count = shared;       // [E]
  int32_t* offset = shared + E;  // [E]
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) count[e] = 0;
  for (int64_t r = threadIdx.x; r < max_rows; r += blockDim.x) sorted_token[r] = -1, sorted_pair[r] = -1;
  for (int64_t g = threadIdx.x; g < max_rows / G; g += blockDim.x) group_expert[g] = -1;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < n_pairs; i += blockDim.x) atomicAdd(&count[ids[i]], 1);
  __syncthreads();
  auto padded = [&](int64_t e) { return (count[e] + G - 1) / G * G; };
  if (threadIdx.x < 32) {
    const int lane = static_cast<int>(threadIdx.x);
    const int64_t per = (E + 31) / 32, first = lane * per, last = min(E, first + per);
    int32_t run = 0;
    for (int64_t e = first; e < last; ++e) run += padded(e);
    int32_t inclusive = run;
    for (int o = 1; o < 32; o <<= 1) {
      const int32_t v = __shfl_up_sync(0xffffffffu, inclusive, o);
      if (lane >= o) inclusive += v;
    }
    int32_t at = inclusive - run;
    for (int64_t e = first; e < last; ++e) offset[e] = at, at += padded(e);
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    for (int32_t g = 0; g < padded(e) / G; ++g) group_expert[offset[e] / G + g] = static_cast<int32_t>(e);
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) count[e] = 0;  // reused as the cursor
  __syncthreads();
  for (int64_t i = threadIdx.x; i < n_pairs; i += blockDim.x) {
    const int32_t e = ids[i];
    const int32_t r = offset[e] + atomicAdd(&count[e], 1);
    sorted_pair[r] = static_cast<int32_t>(i);
    sorted_token[r] = static_cast<int32_t>(i / K);
  }
}

__global__ void moe_align_kernel(const int32_t* ids, int64_t n_pairs, int64_t K, int64_t E, int G, int64_t max_rows,
                                 int32_t* sorted_token, int32_t* sorted_pair, int32_t* group_expert) {
  pdl_begin();  // the matmul after it may copy its weights meanwhile (pdl.cuh)
  align_pairs(ids, n_pairs, K, E, G, max_rows, sorted_token, sorted_pair, group_expert);
}

// Both in one block (few tokens): its warps route the tokens, then the block groups the pairs. (Without the bound
// ptxas gave it 68 registers, over a 1024-thread block's 64K: every launch failed.)
__global__ void __launch_bounds__(1024) route_align_kernel(const float* logits, int64_t T, int64_t E, int64_t K, float scaling, int32_t* ids,
                                   float* gates, int G, int64_t max_rows, int32_t* sorted_token, int32_t* sorted_pair,
                                   int32_t* group_expert) {
  pdl_begin();  // the matmul after it may copy its weights meanwhile (pdl.cuh)
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  for (int64_t t = warp; t < T; t += blockDim.x / 32) route_token(logits, t, E, K, scaling, lane, ids, gates);
  __syncthreads();  // the block's global writes of ids are visible to it after the barrier
  align_pairs(ids, T * K, K, E, G, max_rows, sorted_token, sorted_pair, group_expert);
}

// Grid (T, ceil(D / (4 * 256))): a thread a float4 of a token's row when D % 4 == 0 (else a float), its K loads in
// flight at once (one block a token walking D serially waited on memory D / 256 times: 7 us at T = 1 on an H100).
// The sum over k in order, as before.
constexpr int kSumThreads = 256;

// Pair (t, k)'s row: pair_out's row t*K + k, or rows' row row_of_pair[t*K + k] times scale[t*K + k].
struct PairRows {
  const float* values;
  const int32_t* row_of_pair;  // null: values is pair_out
  const float* scale;
  const float* row_scale;      // null, or a row's first factor: row_scale[row / G]
  int G;
  __device__ __forceinline__ float4 load4(int64_t pair, int64_t D, int64_t i) const {
    if (row_of_pair == nullptr) return *reinterpret_cast<const float4*>(values + pair * D + i);
    const int64_t row = row_of_pair[pair];
    float4 v = *reinterpret_cast<const float4*>(values + row * D + i);
    if (row_scale != nullptr) {
      const float r = row_scale[row / G];
      v = make_float4(__fmul_rn(v.x, r), __fmul_rn(v.y, r), __fmul_rn(v.z, r), __fmul_rn(v.w, r));
    }
    const float s = scale[pair];  // rounded products (never fused into the sum's adds): the scatter's bits
    return make_float4(__fmul_rn(v.x, s), __fmul_rn(v.y, s), __fmul_rn(v.z, s), __fmul_rn(v.w, s));
  }
  __device__ __forceinline__ float load(int64_t pair, int64_t D, int64_t i) const {
    if (row_of_pair == nullptr) return values[pair * D + i];
    const int64_t row = row_of_pair[pair];
    float v = values[row * D + i];
    if (row_scale != nullptr) v = __fmul_rn(v, row_scale[row / G]);
    return __fmul_rn(v, scale[pair]);
  }
};

__global__ void sum_pairs_kernel(PairRows pairs, int64_t K, int64_t D, const float* plus, bool accumulate, float* y) {
  const int64_t t = blockIdx.x;
  if (D % 4 == 0) {
    const int64_t i = (static_cast<int64_t>(blockIdx.y) * kSumThreads + threadIdx.x) * 4;
    if (i >= D) return;
    float4 s = make_float4(0, 0, 0, 0);
    for (int64_t k = 0; k < K; ++k) {
      const float4 v = pairs.load4(t * K + k, D, i);
      s.x += v.x, s.y += v.y, s.z += v.z, s.w += v.w;
    }
    if (plus != nullptr) {
      const float4 v = *reinterpret_cast<const float4*>(plus + t * D + i);
      s.x += v.x, s.y += v.y, s.z += v.z, s.w += v.w;
    }
    float4* out = reinterpret_cast<float4*>(y + t * D + i);
    if (accumulate) {
      const float4 r = *out;
      s = make_float4(r.x + s.x, r.y + s.y, r.z + s.z, r.w + s.w);
    }
    *out = s;
    return;
  }
  for (int64_t i = static_cast<int64_t>(blockIdx.y) * kSumThreads + threadIdx.x; i < D; i += kSumThreads * gridDim.y) {
    float s = 0;
    for (int64_t k = 0; k < K; ++k) s += pairs.load(t * K + k, D, i);
    if (plus != nullptr) s += plus[t * D + i];
    y[t * D + i] = accumulate ? y[t * D + i] + s : s;
  }
}

__global__ void invert_rows_kernel(const int32_t* sorted_pair, int64_t n, int32_t* row_of_pair) {
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < n;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t p = sorted_pair[r];
    if (p >= 0) row_of_pair[p] = static_cast<int32_t>(r);
  }
}

}  // namespace

cudaError_t launch_route(const float* logits, int64_t T, int64_t E, int64_t K, float scaling, int32_t* ids,
                         float* gates, cudaStream_t stream) {
  if (T == 0) return cudaSuccess;
  if (E > 32 * 32) return cudaErrorInvalidValue;  // the taken-mask holds 32 experts a lane
  route_kernel<<<blocks_for(T, kRouteWarps), 32 * kRouteWarps, 0, stream>>>(logits, T, E, K, scaling, ids, gates);
  return cudaGetLastError();
}

cudaError_t launch_moe_align(const int32_t* ids, int64_t T, int64_t K, int64_t E, int rows_per_group,
                             int64_t max_rows, int32_t* sorted_token, int32_t* sorted_pair, int32_t* group_expert,
                             cudaStream_t stream) {
  const size_t shared = static_cast<size_t>(2 * E) * sizeof(int32_t);
  moe_align_kernel<<<1, 1024, shared, stream>>>(ids, T * K, K, E, rows_per_group, max_rows, sorted_token, sorted_pair,
                                                group_expert);
  return cudaGetLastError();
}

cudaError_t launch_route_align(const float* logits, int64_t T, int64_t E, int64_t K, float scaling, int32_t* ids,
                               float* gates, int rows_per_group, int64_t max_rows, int32_t* sorted_token,
                               int32_t* sorted_pair, int32_t* group_expert, cudaStream_t stream) {
  if (T == 0) return cudaSuccess;
  if (E > 32 * 32) return cudaErrorInvalidValue;  // the taken-mask holds 32 experts a lane
  const size_t shared = static_cast<size_t>(2 * E) * sizeof(int32_t);
  route_align_kernel<<<1, 1024, shared, stream>>>(logits, T, E, K, scaling, ids, gates, rows_per_group, max_rows,
                                                  sorted_token, sorted_pair, group_expert);
  return cudaGetLastError();
}

cudaError_t launch_sum_pairs(const float* pair_out, int64_t T, int64_t K, int64_t D, const float* plus,
                             bool accumulate, float* y, cudaStream_t stream) {
  if (T == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(T), blocks_for(D, 4 * kSumThreads));  // 16-byte aligned rows: arena arrays
  sum_pairs_kernel<<<grid, kSumThreads, 0, stream>>>(PairRows{pair_out, nullptr, nullptr, nullptr, 1}, K, D, plus,
                                                     accumulate, y);
  return cudaGetLastError();
}

cudaError_t launch_sum_scaled_pairs(const float* rows, const int32_t* row_of_pair, const float* scale, int64_t T,
                                    int64_t K, int64_t D, const float* plus, bool accumulate, float* y,
                                    cudaStream_t stream, const float* row_scale, int G) {
  if (T == 0) return cudaSuccess;
  if (G <= 0) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(T), blocks_for(D, 4 * kSumThreads));
  sum_pairs_kernel<<<grid, kSumThreads, 0, stream>>>(PairRows{rows, row_of_pair, scale, row_scale, G}, K, D, plus,
                                                     accumulate, y);
  return cudaGetLastError();
}

cudaError_t launch_invert_rows(const int32_t* sorted_pair, int64_t n, int32_t* row_of_pair, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  invert_rows_kernel<<<std::min<unsigned>(blocks_for(n, 256), 1024u), 256, 0, stream>>>(sorted_pair, n, row_of_pair);
  return cudaGetLastError();
}

}  // namespace quatre::cuda
