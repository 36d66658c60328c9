// Sampling summaries on the GPU: the logit edits (penalties, bias), then one block per row: count and maximum of
// the finite logits, the normalisers in double, and the top k by a radix select on the order-preserving bits of the
// logits (four 8-bit digits over shared-memory histograms), a gather of the elements above the k-th key plus its
// lowest-id ties, and a bitonic sort of at most 256 (key, id) pairs in shared memory. The CPU backend's
// summarize_logits is the oracle. Depends on CUDA only.
#include <cmath>

#include "backend/cuda/kernels.h"

namespace quatre::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kBins = 256;

__device__ __forceinline__ bool is_finite_logit(float l) { return l > -INFINITY; }  // NaN and -inf are out

// Keys that order as the floats do (-0 and +0 as one), for finite logits.
__device__ __forceinline__ uint32_t order_key(float l) {
  const uint32_t b = __float_as_uint(l == 0.0f ? 0.0f : l);
  return (b & 0x80000000u) != 0 ? ~b : b | 0x80000000u;
}

__global__ void logit_edits_kernel(float* logits, int64_t V, const DevLogitEdit* edits, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const DevLogitEdit e = edits[i];
  if (i > 0 && edits[i - 1].row == e.row && edits[i - 1].id == e.id) return;  // the chain's first edit applies it
  float* p = logits + e.row * V + e.id;
  float l = *p;
  for (int64_t j = i; j < n && edits[j].row == e.row && edits[j].id == e.id; ++j) {
    const DevLogitEdit ej = edits[j];
    if (ej.rep != 1.0f) l = l > 0 ? __fdiv_rn(l, ej.rep) : __fmul_rn(l, ej.rep);
    l = __fadd_rn(l, ej.add);
  }
  *p = l;
}

template <typename T, typename Op>
__device__ T block_reduce(T v, T* shared, Op op) {  // shared: kWarps entries; every thread gets the result
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // shared may still be read by a previous reduction
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = shared[0];
  for (int w = 1; w < kWarps; ++w) v = op(v, shared[w]);  // the same order in every thread: deterministic
  return v;
}

// Adds one to hist[bin] for every lane with bin >= 0; lanes with the same bin add once together.
__device__ __forceinline__ void histogram_add(int* hist, int bin) {
  if (!__any_sync(0xffffffffu, bin >= 0)) return;
  const unsigned peers = __match_any_sync(0xffffffffu, bin);
  if (bin >= 0 && (threadIdx.x % 32) == static_cast<unsigned>(__ffs(peers) - 1)) atomicAdd(&hist[bin], __popc(peers));
}

__global__ void __launch_bounds__(kThreads) summarize_kernel(const float* logits, int64_t V, const DevRowArgs* args,
                                                              int stride, DevRowStats* stats, int32_t* ids, float* top) {
  __shared__ int hist[kBins];
  __shared__ double dred[kWarps];
  __shared__ float fred[kWarps];
  __shared__ int ired[kWarps];
  __shared__ int warp_ties[kWarps];
  __shared__ unsigned long long cand[kMaxDevSummaryK];
  __shared__ uint32_t s_prefix;
  __shared__ int s_need, s_n_above;
  const int64_t r = blockIdx.x;
  const DevRowArgs a = args[r];
  if (a.k == 0) return;
  const float* x = logits + r * V;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int64_t V_padded = (V + kThreads - 1) / kThreads * kThreads;  // loops uniform over the warps (match_any)

  // Pass 0: count, maximum, histogram of the keys' top digit.
  for (int b = tid; b < kBins; b += kThreads) hist[b] = 0;
  __syncthreads();
  int count = 0;
  float max_l = -INFINITY;
  for (int64_t i = tid; i < V_padded; i += kThreads) {
    const float l = i < V ? x[i] : -INFINITY;
    const bool ok = is_finite_logit(l);
    count += ok ? 1 : 0;
    max_l = ok ? fmaxf(max_l, l) : max_l;
    histogram_add(hist, ok ? static_cast<int>(order_key(l) >> 24) : -1);
  }
  count = block_reduce(count, ired, [](int p, int q) { return p + q; });
  max_l = block_reduce(max_l, fred, [](float p, float q) { return fmaxf(p, q); });
  const int n_top = min(a.k, count);
  DevRowStats st{0.0, 0.0, max_l, count, n_top, 0};
  if (count == 0) {
    if (tid == 0) stats[r] = st;
    for (int i = tid; i < stride; i += kThreads) ids[r * stride + i] = -1, top[r * stride + i] = -INFINITY;
    return;
  }

  // The k-th largest key, one digit a pass: s_prefix holds the digits found, s_need how many of the elements with
  // that prefix are still to take.
  if (tid == 0) s_prefix = 0, s_need = n_top;
  const double max_d = max_l, T = a.temperature;
  double sum_t = 0, sum_1 = 0;
  for (int digit = 0; digit < 4; ++digit) {
    const int shift = 24 - 8 * digit;
    __syncthreads();  // hist complete (the pass before), s_prefix and s_need current
    if (tid == 0) {
      int above = 0, b = kBins - 1;
      while (above + hist[b] < s_need) above += hist[b--];
      s_prefix |= static_cast<uint32_t>(b) << shift;
      s_need -= above;
    }
    __syncthreads();
    if (digit == 3) break;
    for (int b = tid; b < kBins; b += kThreads) hist[b] = 0;
    __syncthreads();
    const uint32_t hi_mask = 0xFFFFFFFFu << shift, prefix = s_prefix;
    for (int64_t i = tid; i < V_padded; i += kThreads) {
      const float l = i < V ? x[i] : -INFINITY;
      const bool ok = is_finite_logit(l);
      const uint32_t key = ok ? order_key(l) : 0;
      histogram_add(hist, ok && (key & hi_mask) == prefix ? static_cast<int>((key >> (shift - 8)) & 0xFF) : -1);
      if (digit == 0 && ok) {  // the normalisers ride along the first refining pass
        if (T > 0) sum_t += exp((static_cast<double>(l) - max_d) / T);
        if (T != 1) sum_1 += exp(static_cast<double>(l) - max_d);
      }
    }
    __syncthreads();
  }
  sum_t = block_reduce(sum_t, dred, [](double p, double q) { return p + q; });
  sum_1 = block_reduce(sum_1, dred, [](double p, double q) { return p + q; });
  st.sum_exp = sum_t;
  st.log_sum_exp = log(T == 1 ? sum_t : sum_1);

  // Gather: every key above the threshold, and the s_need lowest-id elements equal to it (an ordered scan).
  const uint32_t threshold = s_prefix;
  const int need = s_need;
  if (tid == 0) s_n_above = 0;
  __syncthreads();
  int ties_taken = 0;  // the same in every thread
  for (int64_t base = 0; base < V_padded; base += kThreads) {
    const int64_t i = base + tid;
    const float l = i < V ? x[i] : -INFINITY;
    const bool ok = is_finite_logit(l);
    const uint32_t key = ok ? order_key(l) : 0;
    const unsigned long long packed = (static_cast<unsigned long long>(key) << 32) | (0xFFFFFFFFu - static_cast<uint32_t>(i));
    if (ok && key > threshold) cand[atomicAdd(&s_n_above, 1)] = packed;
    if (ties_taken < need) {
      const bool tie = ok && key == threshold;
      const unsigned ballot = __ballot_sync(0xffffffffu, tie);
      if (lane == 0) warp_ties[warp] = __popc(ballot);
      __syncthreads();
      int rank = __popc(ballot & ((1u << lane) - 1)), total = 0;
      for (int w = 0; w < kWarps; ++w) {
        rank += w < warp ? warp_ties[w] : 0;
        total += warp_ties[w];
      }
      if (tie && ties_taken + rank < need) cand[(n_top - need) + ties_taken + rank] = packed;
      ties_taken += total;
      __syncthreads();  // warp_ties read by all before the next chunk writes it
    }
  }
  __syncthreads();

  // Bitonic sort of kMaxDevSummaryK packed pairs, descending (unused slots 0: last).
  for (int i = n_top + tid; i < kMaxDevSummaryK; i += kThreads) cand[i] = 0;
  __syncthreads();
  for (int size = 2; size <= kMaxDevSummaryK; size <<= 1) {
    for (int j = size >> 1; j > 0; j >>= 1) {
      if (tid < kMaxDevSummaryK) {
        const int partner = tid ^ j;
        if (partner > tid) {
          const unsigned long long p = cand[tid], q = cand[partner];
          const bool descending = (tid & size) == 0;
          if (descending ? p < q : p > q) cand[tid] = q, cand[partner] = p;
        }
      }
      __syncthreads();
    }
  }
  for (int i = tid; i < stride; i += kThreads) {
    const int32_t id = i < n_top ? static_cast<int32_t>(0xFFFFFFFFu - static_cast<uint32_t>(cand[i] & 0xFFFFFFFFu)) : -1;
    ids[r * stride + i] = id;
    top[r * stride + i] = id >= 0 ? x[id] : -INFINITY;
  }
  if (tid == 0) stats[r] = st;
}

}  // namespace

cudaError_t launch_logit_edits(float* logits, int64_t V, const DevLogitEdit* edits, int64_t n_edits, cudaStream_t stream) {
  if (n_edits == 0) return cudaSuccess;
  logit_edits_kernel<<<static_cast<unsigned>((n_edits + 255) / 256), 256, 0, stream>>>(logits, V, edits, n_edits);
  return cudaGetLastError();
}

cudaError_t launch_summarize_rows(const float* logits, int64_t R, int64_t V, const DevRowArgs* args, int stride,
                                  DevRowStats* stats, int32_t* ids, float* top, cudaStream_t stream) {
  if (R == 0) return cudaSuccess;
  summarize_kernel<<<static_cast<unsigned>(R), kThreads, 0, stream>>>(logits, V, args, stride, stats, ids, top);
  return cudaGetLastError();
}

}  // namespace quatre::cuda
