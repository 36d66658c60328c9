// Routing and expert grouping on the device: softmax + top-K + renormalisation per token, the alignment of
// (token, k) pairs into per-expert row groups (no host round trip), and the per-token sum of expert outputs.
// Depends on CUDA only.
#include "backend/cuda/device_math.cuh"

namespace quatre::cuda {
namespace {

// One thread per token. p_e = exp(l_e - max) / Σ (the sum in index order, as the CPU backend); the K largest
// p by repeated scans (strictly greater wins, so ties go to the lower index).
__global__ void route_kernel(const float* logits, int64_t T, int64_t E, int64_t K, float scaling, int32_t* ids,
                             float* gates) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= T) return;
  const float* l = logits + t * E;
  float m = -INFINITY;
  for (int64_t e = 0; e < E; ++e) m = fmaxf(m, l[e]);
  float sum = 0;
  for (int64_t e = 0; e < E; ++e) sum += expf(l[e] - m);
  int32_t* id = ids + t * K;
  float* gate = gates + t * K;
  float total = 0;
  for (int64_t k = 0; k < K; ++k) {
    int32_t best = -1;
    float best_p = 0;
    for (int32_t e = 0; e < E; ++e) {
      bool taken = false;
      for (int64_t j = 0; j < k; ++j) taken = taken || id[j] == e;
      if (taken) continue;
      const float p = expf(l[e] - m) / sum;
      if (best < 0 || p > best_p) best = e, best_p = p;
    }
    id[k] = best;
    gate[k] = best_p;
    total += best_p;
  }
  const float denominator = total + 1e-20f;
  for (int64_t k = 0; k < K; ++k) gate[k] = gate[k] / denominator * scaling;
}

// One block. counts -> padded offsets (thread 0, E steps) -> each pair placed by an atomic cursor of its expert.
// Row order inside an expert's group is not fixed; every row's result is independent of its place.
__global__ void moe_align_kernel(const int32_t* ids, int64_t n_pairs, int64_t K, int64_t E, int G, int64_t max_rows,
                                 int32_t* sorted_token, int32_t* sorted_pair, int32_t* group_expert) {
  extern __shared__ int32_t shared[];
  int32_t* count = shared;       // [E]
  int32_t* offset = shared + E;  // [E]
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) count[e] = 0;
  for (int64_t r = threadIdx.x; r < max_rows; r += blockDim.x) sorted_token[r] = -1, sorted_pair[r] = -1;
  for (int64_t g = threadIdx.x; g < max_rows / G; g += blockDim.x) group_expert[g] = -1;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < n_pairs; i += blockDim.x) atomicAdd(&count[ids[i]], 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t at = 0;
    for (int64_t e = 0; e < E; ++e) {
      offset[e] = at;
      const int32_t n_groups = (count[e] + G - 1) / G;
      for (int32_t g = 0; g < n_groups; ++g) group_expert[at / G + g] = static_cast<int32_t>(e);
      at += n_groups * G;
      count[e] = 0;  // reused as the cursor
    }
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < n_pairs; i += blockDim.x) {
    const int32_t e = ids[i];
    const int32_t r = offset[e] + atomicAdd(&count[e], 1);
    sorted_pair[r] = static_cast<int32_t>(i);
    sorted_token[r] = static_cast<int32_t>(i / K);
  }
}

__global__ void sum_pairs_kernel(const float* pair_out, int64_t K, int64_t D, float* y) {
  const int64_t t = blockIdx.x;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    float s = 0;
    for (int64_t k = 0; k < K; ++k) s += pair_out[(t * K + k) * D + i];
    y[t * D + i] = s;
  }
}

}  // namespace

cudaError_t launch_route(const float* logits, int64_t T, int64_t E, int64_t K, float scaling, int32_t* ids,
                         float* gates, cudaStream_t stream) {
  if (T == 0) return cudaSuccess;
  route_kernel<<<blocks_for(T, 64), 64, 0, stream>>>(logits, T, E, K, scaling, ids, gates);
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

cudaError_t launch_sum_pairs(const float* pair_out, int64_t T, int64_t K, int64_t D, float* y, cudaStream_t stream) {
  if (T == 0) return cudaSuccess;
  sum_pairs_kernel<<<static_cast<unsigned>(T), 256, 0, stream>>>(pair_out, K, D, y);
  return cudaGetLastError();
}

}  // namespace quatre::cuda
