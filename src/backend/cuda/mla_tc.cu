// MLA attention's key pass (the absorbed form's "attend" stage) on the tensor cores, for BF16 and FP8 latent caches.
// One block per (token, 32 heads, key split), keys in tiles of KEYS = 64, 32 or 16 cache rows staged in shared memory
// as BF16 (FP8 E4M3 and BF16 are exact in BF16). Per tile, with mma.sync m16n8k16:
//   S [32 heads, KEYS] = [q_abs | q_rope] [32, R+Dr] · tileᵀ           (scores)
//   P = exp(S·scale - m), online softmax per head                     (m, l running per head)
//   ctx [32, R] = ctx · e^(m_old - m) + P · tile[:, :R]               (unnormalised partial contexts)
// The fp32 operands (q and P) go in as three BF16 terms (hi + mid + lo, as the matmul kernels split activations), so
// the results match fp32 arithmetic up to summation order; with MlaLaunch::bf16_operands as one (rounded to BF16:
// a third of the mma, vLLM's numerics). Warp w takes the heads 16 (w % 2) .. + 16 and the latent
// columns of half w / 2 of ctx; the two warps of a head block each compute half the tile's scores and swap them
// through shared memory (tiles of 32 or 64 keys; QUATRE_CUDA_MLA_SPLIT_SCORES=0, or 16-key tiles: both compute
// all), then run the same softmax on the same values (the same bits), so no softmax state crosses warps. The same outputs as mla_kernels.cu's tiled kernel (split_ctx or,
// with one split, q_abs; split_ml), which its combine kernel then reads. QUATRE_CUDA_MLA_TC=0 (read once) keeps
// the CUDA-core tiled kernel (A/B timing). The tile shrinks when there are few blocks (decode at small batches: one
// token's 32 tiles of 64 keys at context 2048 kept 32 SMs busy with ~670 mma a warp each): the key splits then
// spread over about two blocks an SM (mla_attend_tc_tile_keys; QUATRE_CUDA_MLA_TC_KEYS=16|32|64 forces one size).
// Depends on CUDA only.
#include <cstdlib>
#include <cstring>

#include "backend/cuda/device_math.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/online_softmax.cuh"
#include "backend/cuda/pdl.cuh"

namespace quatre::cuda {
namespace {

constexpr int kMaxKeys = 64;      // cache rows a tile, at most (KEYS: 16, 32 or 64)
constexpr int kHeadsTc = 32;      // heads a block (two m16 tiles; heads past H are zero rows)
constexpr int kWarpsTc = 4;
constexpr int kMaxColTiles = 16;  // n8 tiles of ctx a warp: R / 2 <= 128
constexpr int kSmsPerCard = 132;  // an H100's or H200's SMs: the split heuristics' target is two blocks an SM

// Shared-memory row strides: q rows in floats ≡ 8 (mod 32) and tile rows in BF16 ≡ 8 (mod 64) so that the fragment
// loads (8 rows x 4 threads, 8 bytes each) and ldmatrix rows (8 rows x 16 bytes) fall in distinct banks.
__host__ __device__ constexpr int q_stride(int width) { return width + 8; }
__host__ __device__ constexpr int tile_stride(int width) { return width + 8; }

// The TERMS BF16 terms (3: fp32 exactly; 1: rounded) of A's registers (rows g, g + 8; columns k + 2c, + 1 and
// k + 2c + 8, + 9) from fp32 values.
template <int TERMS>
__device__ __forceinline__ void a_terms(float2 v0, float2 v1, float2 v2, float2 v3, uint32_t (&a)[TERMS][4]) {
  uint32_t t0[TERMS], t1[TERMS], t2[TERMS], t3[TERMS];
  split_bf16<TERMS>(v0.x, v0.y, t0), split_bf16<TERMS>(v1.x, v1.y, t1);
  split_bf16<TERMS>(v2.x, v2.y, t2), split_bf16<TERMS>(v3.x, v3.y, t3);
#pragma unroll
  for (int i = 0; i < TERMS; ++i) a[i][0] = t0[i], a[i][1] = t1[i], a[i][2] = t2[i], a[i][3] = t3[i];
}

// Cache rows of the tile into shared memory as BF16; rows past the split (row < 0) as zeros, so that 0 · p stays 0
// over a poisoned cache. BF16: 16-byte cp.async, committed, not waited for (wait_tile); FP8: 8-byte loads widened to
// 16 bytes of BF16, done on return.
template <WType CT, int KEYS>
__device__ __forceinline__ void stage_tile(const MlaLaunch& a, const int64_t* key_row, uint16_t* tile, int width) {
  const int chunks = width / 8;  // 8 elements a chunk
  const int ts = tile_stride(width);
  const int tid = static_cast<int>(threadIdx.x);
  if constexpr (CT == WType::kBF16) {
    for (int i = tid; i < KEYS * chunks; i += kWarpsTc * 32) {
      const int r = i / chunks, ch = i % chunks;
      uint16_t* dst = tile + r * ts + 8 * ch;
      const int64_t row = key_row[r];
      if (row < 0) {
        *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
      } else {
        const uint16_t* src = static_cast<const uint16_t*>(a.cache) + row * width + 8 * ch;
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst)), "l"(src));
      }
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  } else {
    static_assert(CT == WType::kF8E4M3);
    batched_copy<10>(
        KEYS * chunks, tid, kWarpsTc * 32,
        [&](int i) {
          const int64_t row = key_row[i / chunks];
          return row < 0 ? make_uint2(0, 0)
                         : *reinterpret_cast<const uint2*>(static_cast<const uint8_t*>(a.cache) + row * width + 8 * (i % chunks));
        },
        [&](int i, uint2 u) {  // FP8 zero bytes are BF16 zeros
          *reinterpret_cast<uint4*>(tile + (i / chunks) * ts + 8 * (i % chunks)) = make_uint4(
              fp8x2_to_bf16x2(u.x), fp8x2_to_bf16x2(u.x >> 16), fp8x2_to_bf16x2(u.y), fp8x2_to_bf16x2(u.y >> 16));
        });
  }
}

__device__ __forceinline__ void wait_tile() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

template <WType CT, int KEYS, int TERMS>
__global__ void __launch_bounds__(kWarpsTc * 32, 2) mla_attend_tc_kernel(MlaLaunch a) {
  constexpr bool kSplitScores = KEYS >= 32;  // halves of whole n-tile pairs
  pdl_begin();  // the combine after it may load its weights meanwhile (pdl.cuh)
  constexpr int kScoreTiles = KEYS / 8;  // n8 tiles of scores
  extern __shared__ float4 smem4[];
  const int R = static_cast<int>(a.R), width = static_cast<int>(a.R + a.Dr), qs = q_stride(width);
  const int64_t Dh = a.Dn + a.Dr;
  float* q = reinterpret_cast<float*>(smem4);                                  // [32][qs] q_abs | q_rope
  uint16_t* tile = reinterpret_cast<uint16_t*>(q + kHeadsTc * qs);             // [KEYS][tile_stride] BF16
  float* swap = reinterpret_cast<float*>(tile + KEYS * tile_stride(width));     // [4][16][KEYS + 8] split scores
  __shared__ int64_t key_row[KEYS];
  const int64_t n_groups = (a.H + kHeadsTc - 1) / kHeadsTc;
  const int64_t t = blockIdx.x / n_groups, h0 = (blockIdx.x % n_groups) * kHeadsTc;
  const int n_heads = static_cast<int>(min(static_cast<int64_t>(kHeadsTc), a.H - h0));
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int32_t seq = a.seq_index[t], n = a.context_lens[t];
  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks_per_seq;
  const int32_t split = static_cast<int32_t>(blockIdx.y);
  const int32_t chunk = ((n + KEYS - 1) / KEYS + a.n_splits - 1) / a.n_splits * KEYS;
  const int32_t j_begin = split * chunk, j_end = min(n, j_begin + chunk);
  // The first tile's cache rows are on their way (BF16: cp.async) while q is loaded.
  if (j_begin < j_end) {
    tile_key_rows(a, table, j_begin, min(KEYS, j_end - j_begin), KEYS, key_row);
    __syncthreads();
    stage_tile<CT, KEYS>(a, key_row, tile, width);
  }
  // The q rows: 16-byte loads where q_rope's rows are 16-byte aligned (q_abs rows always are: R % 32 == 0), 20 a
  // thread at the model's dims, ten in flight.
  const float* q_rope = a.q + t * a.H * Dh + a.Dn;  // + h · Dh
  if (Dh % 4 == 0 && a.Dn % 4 == 0 && reinterpret_cast<uintptr_t>(a.q) % 16 == 0) {
    const int quads = width / 4;
    batched_copy<10>(
        kHeadsTc * quads, tid, kWarpsTc * 32,
        [&](int i) {
          const int hh = i / quads, col = 4 * (i % quads);
          const int64_t h = h0 + hh;
          if (hh >= n_heads) return make_float4(0, 0, 0, 0);
          return *reinterpret_cast<const float4*>(col < R ? a.q_abs + (t * a.H + h) * a.R + col : q_rope + h * Dh + col - R);
        },
        [&](int i, float4 v) { *reinterpret_cast<float4*>(q + (i / quads) * qs + 4 * (i % quads)) = v; });
  } else {
    batched_copy<10>(
        kHeadsTc * width, tid, kWarpsTc * 32,
        [&](int i) {
          const int hh = i / width, col = i % width;
          const int64_t h = h0 + hh;
          if (hh >= n_heads) return 0.0f;
          return col < R ? a.q_abs[(t * a.H + h) * a.R + col] : q_rope[h * Dh + col - R];
        },
        [&](int i, float v) { q[(i / width) * qs + i % width] = v; });
  }

  const int mt = warp % 2, half = warp / 2;
  const int col_tiles = R / 16;  // n8 tiles of ctx in this warp's half (R / 2 columns)
  const int col0 = half * (R / 2);
  const float* q_g = q + (16 * mt + g) * qs + 2 * c;
  const float* q_g8 = q_g + 8 * qs;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // rows g and g + 8
  float acc[kMaxColTiles][4] = {};
  const int ts = tile_stride(width);
  for (int32_t j0 = j_begin; j0 < j_end; j0 += KEYS) {
    const int n_keys = min(KEYS, j_end - j0);
    if (j0 != j_begin) {
      __syncthreads();  // the previous tile is consumed
      tile_key_rows(a, table, j0, n_keys, KEYS, key_row);
      __syncthreads();
      stage_tile<CT, KEYS>(a, key_row, tile, width);
    }
    wait_tile();
    __syncthreads();  // the tile (and, the first time, q) is written

    // Scores of this warp's 16 heads against the tile's keys: KEYS / 8 n-tiles, k over the whole row. Split: the two
    // warps of a head block take half the n-tiles each and swap them through shared memory, so no score is computed
    // twice; every score is the same sum in the same order either way.
    float s[kScoreTiles][4] = {};
    const bool split = kSplitScores && a.split_scores;
    const auto is_mine = [&](int nt) { return nt / (kScoreTiles / 2) == half; };  // split: this warp's n-tiles
    for (int k = 0; k < width; k += 16) {
      uint32_t qa[TERMS][4];
      a_terms<TERMS>(*reinterpret_cast<const float2*>(q_g + k), *reinterpret_cast<const float2*>(q_g8 + k),
                     *reinterpret_cast<const float2*>(q_g + k + 8), *reinterpret_cast<const float2*>(q_g8 + k + 8), qa);
#pragma unroll
      for (int nt = 0; nt < kScoreTiles; nt += 2) {
        if (split && !is_mine(nt)) continue;  // the other warp's n-tiles
        // Matrices: keys 8nt.. at k, k + 8; keys 8(nt+1).. at k, k + 8 -> b0, b1 of n-tiles nt and nt + 1.
        const int mat = lane / 8, r = lane % 8;
        uint32_t b[4];
        ldmatrix_x4(b, tile + (8 * (nt + mat / 2) + r) * ts + k + 8 * (mat % 2));
#pragma unroll
        for (int i = 0; i < TERMS; ++i) {
          mma_bf16(s[nt], qa[i], b[0], b[1]);
          mma_bf16(s[nt + 1], qa[i], b[2], b[3]);
        }
      }
    }
    if (split) {  // this warp's n-tiles out, the other warp's in (its pair: the same m-tile, the other half)
      constexpr int kSwapStride = KEYS + 8;  // (8g + 2c) mod 32: two wavefronts a float2 access, the least
      float* mine = swap + (2 * mt + half) * 16 * kSwapStride;
      const float* theirs = swap + (2 * mt + 1 - half) * 16 * kSwapStride;
#pragma unroll
      for (int nt = 0; nt < kScoreTiles; ++nt) {
        if (!is_mine(nt)) continue;
        *reinterpret_cast<float2*>(mine + g * kSwapStride + 8 * nt + 2 * c) = make_float2(s[nt][0], s[nt][1]);
        *reinterpret_cast<float2*>(mine + (g + 8) * kSwapStride + 8 * nt + 2 * c) = make_float2(s[nt][2], s[nt][3]);
      }
      if (mt == 0) {  // the pair's two warps (named barriers 1 and 2; constant ids keep ptxas from reserving 16)
        asm volatile("bar.sync 1, 64;\n" ::: "memory");
      } else {
        asm volatile("bar.sync 2, 64;\n" ::: "memory");
      }
#pragma unroll
      for (int nt = 0; nt < kScoreTiles; ++nt) {
        if (is_mine(nt)) continue;
        const float2 lo = *reinterpret_cast<const float2*>(theirs + g * kSwapStride + 8 * nt + 2 * c);
        const float2 hi = *reinterpret_cast<const float2*>(theirs + (g + 8) * kSwapStride + 8 * nt + 2 * c);
        s[nt][0] = lo.x, s[nt][1] = lo.y, s[nt][2] = hi.x, s[nt][3] = hi.y;
      }
    }
    // Online softmax of rows g and g + 8; keys past the tile's count are -inf.
    float corr[2];
    online_softmax_tile(s, [&](int, int key) { return key < n_keys; }, a.softmax_scale, m, l, corr);
#pragma unroll
    for (int j = 0; j < kMaxColTiles; ++j) {
      acc[j][0] *= corr[0], acc[j][1] *= corr[0], acc[j][2] *= corr[1], acc[j][3] *= corr[1];
    }
    // ctx += P · tile[:, col0 .. col0 + R/2): k over the tile's keys in steps of 16; P's A registers are the score
    // accumulators of n-tiles 2kk and 2kk + 1.
#pragma unroll
    for (int kk = 0; kk < KEYS / 16; ++kk) {
      uint32_t pa[TERMS][4];
      a_terms<TERMS>(make_float2(s[2 * kk][0], s[2 * kk][1]), make_float2(s[2 * kk][2], s[2 * kk][3]),
                     make_float2(s[2 * kk + 1][0], s[2 * kk + 1][1]), make_float2(s[2 * kk + 1][2], s[2 * kk + 1][3]), pa);
#pragma unroll
      for (int j = 0; j < kMaxColTiles; j += 2) {
        if (j >= col_tiles) break;
        // Matrices (transposed): keys 16kk.. and 16kk + 8.. at columns n, then at n + 8 -> b0, b1 of n-tiles j, j + 1.
        const int mat = lane / 8, r = lane % 8;
        uint32_t b[4];
        ldmatrix_x4_trans(b, tile + (16 * kk + 8 * (mat % 2) + r) * ts + col0 + 8 * j + 8 * (mat / 2));
#pragma unroll
        for (int i = 0; i < TERMS; ++i) {
          mma_bf16(acc[j], pa[i], b[0], b[1]);
          mma_bf16(acc[j + 1], pa[i], b[2], b[3]);
        }
      }
    }
  }
  __syncthreads();  // with one split the partial contexts go over q_abs, which every warp has read by now
  float* ctx = a.n_splits > 1 ? a.split_ctx : a.q_abs;  // [T*H*n_splits, R]
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    const int hh = 16 * mt + g + 8 * hr;
    if (hh >= n_heads) continue;
    const int64_t at = (t * a.H + h0 + hh) * a.n_splits + split;
#pragma unroll
    for (int j = 0; j < kMaxColTiles; ++j) {
      if (j >= col_tiles) break;
      *reinterpret_cast<float2*>(ctx + at * a.R + col0 + 8 * j + 2 * c) = make_float2(acc[j][2 * hr], acc[j][2 * hr + 1]);
    }
    if (half == 0 && c == 0) a.split_ml[2 * at] = m[hr], a.split_ml[2 * at + 1] = l[hr];
  }
}

size_t tc_shared_bytes(const MlaLaunch& a, int keys) {
  const int width = static_cast<int>(a.R + a.Dr);
  return static_cast<size_t>(kHeadsTc * q_stride(width)) * sizeof(float) +
         static_cast<size_t>(keys * tile_stride(width)) * sizeof(uint16_t) +
         static_cast<size_t>(a.split_scores ? kWarpsTc * 16 * (keys + 8) : 0) * sizeof(float);
}

int g_split_test_mode = -1;  // set_mla_split_scores_for_tests

bool split_scores_enabled() {
  static const bool on = env_switch_on("QUATRE_CUDA_MLA_SPLIT_SCORES");
  return g_split_test_mode < 0 ? on : g_split_test_mode != 0;
}

bool tc_enabled() {
  static const bool on = env_switch_on("QUATRE_CUDA_MLA_TC");
  return on;
}

}  // namespace

bool mla_attend_is_tc(int64_t R, int64_t Dr, bool naive, WType cache_type) {
  return tc_enabled() && !naive && (cache_type == WType::kBF16 || cache_type == WType::kF8E4M3) && R % 32 == 0 &&
         R > 0 && R <= 16 * kMaxColTiles && Dr % 16 == 0;
}

namespace {
constexpr bool valid_keys(int k) { return k == 16 || k == 32 || k == 64; }
int g_test_keys = 0;  // set_mla_tc_keys_for_tests
}  // namespace

void set_mla_tc_keys_for_tests(int keys) { g_test_keys = valid_keys(keys) ? keys : 0; }
void set_mla_split_scores_for_tests(int mode) { g_split_test_mode = mode; }

int mla_attend_tc_tile_keys(int64_t T, int64_t H, int64_t max_context) {
  static const int env_keys = [] {
    const char* v = std::getenv("QUATRE_CUDA_MLA_TC_KEYS");
    return v != nullptr && valid_keys(std::atoi(v)) ? std::atoi(v) : 0;
  }();
  if (g_test_keys != 0) return g_test_keys;
  if (env_keys != 0) return env_keys;
  // Halve the tile while the key splits it allows would not give about two blocks an SM.
  const int64_t blocks = T * ((H + kHeadsTc - 1) / kHeadsTc);
  int keys = kMaxKeys;
  while (keys > 16 && blocks * ((max_context + keys - 1) / keys) < 2 * kSmsPerCard) keys /= 2;
  return keys;
}

cudaError_t launch_mla_attend_tc(const MlaLaunch& a, cudaStream_t stream) {
  if (!mla_attend_is_tc(a.R, a.Dr, a.naive, a.cache_type) || reinterpret_cast<uintptr_t>(a.cache) % 16 != 0) {
    return cudaErrorInvalidValue;
  }
  const int keys = mla_attend_tc_tile_keys(a.T, a.H, static_cast<int64_t>(a.max_blocks_per_seq) * a.block_size);
  MlaLaunch l = a;
  l.split_scores = keys >= 32 && split_scores_enabled();
  const size_t shared = tc_shared_bytes(l, keys);
  const dim3 grid(static_cast<unsigned>(a.T * ((a.H + kHeadsTc - 1) / kHeadsTc)), static_cast<unsigned>(a.n_splits));
  const auto launch = [&](auto kernel) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared));
    if (e != cudaSuccess) return e;
    kernel<<<grid, kWarpsTc * 32, shared, stream>>>(l);
    return cudaGetLastError();
  };
  const auto by_terms = [&]<WType CT, int KEYS>() {
    return a.bf16_operands ? launch(mla_attend_tc_kernel<CT, KEYS, 1>) : launch(mla_attend_tc_kernel<CT, KEYS, 3>);
  };
  const auto by_keys = [&](auto cache_tag) {
    constexpr WType CT = decltype(cache_tag)::value;
    return keys == 16 ? by_terms.template operator()<CT, 16>()
           : keys == 32 ? by_terms.template operator()<CT, 32>()
                        : by_terms.template operator()<CT, 64>();
  };
  return a.cache_type == WType::kBF16 ? by_keys(WTag<WType::kBF16>{}) : by_keys(WTag<WType::kF8E4M3>{});
}

}  // namespace quatre::cuda
