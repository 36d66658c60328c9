// MLA attention over a prompt run in the spec's (naive) form with BF16 operands (MlaArgs::bf16_operands): what
// vLLM and FlashMLA's users run for prefill, where the absorbed form's scores against the 320-wide latent cost
// 2.25x the products of 128-wide heads. For n consecutive tokens of one sequence whose keys are its cache entries,
// a chunk [k0, k0 + c_end) of them at a time (launch_mla_prefill_*; the caller runs the kv_b matmul between the
// gather and the pack, and carries the softmax from chunk to chunk in o and ml):
//   gather: lat [c_end, R+Dr] fp32 = the cached rows (c_kv normed | k_rope roped)
//   matmul: kv  [c_end, H*(Dn+Dv)] = lat[:, :R] · kv_bᵀ               (per head: k_nope then v)
//   pack:   K [H, c_end, Dn+Dr] = bf16(k_nope_h | k_rope), V [H, c_end, Dv] = bf16(v_h)    (8 columns a thread)
//   attend: o[t, h] = softmax(scale · q_h · Kᵀ, keys < context_lens[t]) · V, online over tiles of 64 keys
// The attend kernel: one block a (128 query rows, head), 4 warps of 32 rows (q's A fragments read from shared memory)
// or 8 of 16 (held in registers); K and V tiles double-buffered in shared memory with cp.async (a tile read from L2
// once for 128 rows); S and P·V on mma.sync m16n8k16 with fp32 accumulators; the online softmax per row in fp32 (the
// same steps as mla_tc.cu's), masking only the tiles that reach past a row's context; a warp skips the tiles past all
// of its rows'. Blocks run the latest queries (most keys) first. Depends on CUDA only.
#include <algorithm>
#include <cstdlib>

#include "backend/cuda/device_math.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/online_softmax.cuh"

namespace quatre::cuda {
namespace {

constexpr int kRows = 128;  // query rows a block (8 warps of 16, or 4 of 32)
constexpr int kKeys = 64;   // keys a tile
constexpr int kPad = 8;     // BF16 row padding: at the model's 128-wide rows, 272 bytes ≡ 16 (mod 128), so
                            // ldmatrix's 8 rows fall in distinct banks (the demo's 24-wide V rows do not: tests only)

__global__ void gather_latent_kernel(MlaPrefillLaunch a, float* lat) {
  const int64_t width = a.R + a.Dr;
  const int64_t n = a.c_end * width;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = a.k0 + i / width, col = i % width;  // the entry
    const int64_t row = static_cast<int64_t>(a.table[j / a.block_size]) * a.block_size + j % a.block_size;
    lat[i] = load_weight(a.cache, a.cache_type, row * width + col);
  }
}

// One thread a (key, head, 8 columns of K then V): two float4 loads, one 16-byte store (Dn, Dr, Dv multiples of 8,
// mla_prefill_dims_supported; every row offset a multiple of 4 floats or 8 BF16).
__global__ void pack_kv_kernel(MlaPrefillLaunch a, const float* lat, const float* kv, uint16_t* k, uint16_t* v) {
  const int dn = static_cast<int>(a.Dn), dr = static_cast<int>(a.Dr), dv = static_cast<int>(a.Dv);
  const int dqk = dn + dr, chunks = (dqk + dv) / 8, H = static_cast<int>(a.H), width = static_cast<int>(a.R + a.Dr);
  const int64_t n = a.c_end * H * chunks;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int col = 8 * static_cast<int>(i % chunks);
    const int64_t jh = i / chunks;  // j · H + h
    const int64_t j = jh / H, h = jh % H;
    const float* src;
    uint16_t* dst;
    if (col < dn) {  // k_nope
      src = kv + jh * (dn + dv) + col;
      dst = k + (h * a.c_end + j) * dqk + col;
    } else if (col < dqk) {  // k_rope, shared by the heads
      src = lat + j * width + a.R + col - dn;
      dst = k + (h * a.c_end + j) * dqk + col;
    } else {  // v
      src = kv + jh * (dn + dv) + dn + col - dqk;
      dst = v + (h * a.c_end + j) * dv + col - dqk;
    }
    const float4 x = reinterpret_cast<const float4*>(src)[0], y = reinterpret_cast<const float4*>(src)[1];
    *reinterpret_cast<uint4*>(dst) =
        make_uint4(pack_bf16x2(x.x, x.y), pack_bf16x2(x.z, x.w), pack_bf16x2(y.x, y.y), pack_bf16x2(y.z, y.w));
  }
}

// Rows [j0, j0 + kKeys) of a head's K [c_end, DQK] and V [c_end, DV] into the tile buffers (16-byte cp.async; rows
// past c_end as zeros), committed as one group.
template <int DQK, int DV, int kThreads>
__device__ __forceinline__ void stage_kv(const uint16_t* k, const uint16_t* v, int64_t c_end, int64_t j0,
                                         uint16_t* kt, uint16_t* vt) {
  constexpr int kc = DQK / 8, vc = DV / 8;  // 16-byte chunks a row
  for (int i = static_cast<int>(threadIdx.x); i < kKeys * (kc + vc); i += kThreads) {
    const bool is_k = i < kKeys * kc;
    const int r = is_k ? i / kc : (i - kKeys * kc) / vc, ch = is_k ? i % kc : (i - kKeys * kc) % vc;
    uint16_t* dst = is_k ? kt + r * (DQK + kPad) + 8 * ch : vt + r * (DV + kPad) + 8 * ch;
    if (j0 + r >= c_end) {
      *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
    } else {
      const uint16_t* src = is_k ? k + (j0 + r) * DQK + 8 * ch : v + (j0 + r) * DV + 8 * ch;
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst)), "l"(src));
    }
  }
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// MT m16 tiles of rows a warp (kRows / (16·MT) warps): with MT = 2 each K or V fragment read from shared memory
// feeds two mma (half the shared-memory reads of MT = 1 a product), q's fragments then read from shared memory a tile
// (registers hold the two rows' accumulators instead).
template <int DQK, int DV, int MT>
__global__ void __launch_bounds__(kRows / MT * 2, MT) mla_prefill_attend_kernel(MlaPrefillLaunch a) {
  static_assert(DQK % 16 == 0 && DV % 8 == 0 && (MT == 1 || MT == 2));
  constexpr int kThreads = kRows / MT * 2;  // 32 a warp of 16·MT rows
  constexpr int kQs = DQK + kPad, kVs = DV + kPad;
  constexpr int kDvTiles = DV / 8;
  extern __shared__ float4 smem4[];
  uint16_t* qt = reinterpret_cast<uint16_t*>(smem4);  // [kRows][kQs], then two buffers of a K tile and a V tile
  constexpr int kBuf = kKeys * (kQs + kVs);            // elements a buffer
  uint16_t* const kt0 = qt + kRows * kQs;              // buffer b: K at kt0 + b·kBuf, V at kt0 + b·kBuf + kKeys·kQs
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int row0 = 16 * MT * warp;  // the warp's first row in the block
  const int64_t n_qblocks = (a.n + kRows - 1) / kRows;
  const int64_t qb = n_qblocks - 1 - blockIdx.x, h = blockIdx.y;  // the latest rows (most keys) first
  const int64_t t0 = qb * kRows, rows = min(static_cast<int64_t>(kRows), a.n - t0);
  const uint16_t* k = a.k + h * a.c_end * DQK;
  const uint16_t* v = a.v + h * a.c_end * DV;
  // The chunk's keys the block's rows see: up to the last row's context (contexts grow along the run).
  const int64_t keys = min(a.context_lens[t0 + rows - 1] - a.k0, a.c_end);
  if (keys > 0) stage_kv<DQK, DV, kThreads>(k, v, a.c_end, 0, kt0, kt0 + kKeys * kQs);

  // q rows of this head as BF16 (rows past the run: zeros).
  const int64_t dh = a.Dn + a.Dr;
  for (int i = tid; i < kRows * (DQK / 2); i += kThreads) {
    const int r = i / (DQK / 2), col = 2 * (i % (DQK / 2));
    float2 x = make_float2(0.0f, 0.0f);
    if (r < rows) {
      const float* src = a.q + (t0 + r) * a.H * dh + h * dh + col;
      x = make_float2(src[0], src[1]);
    }
    *reinterpret_cast<uint32_t*>(qt + r * kQs + col) = pack_bf16x2(x.x, x.y);
  }
  __syncthreads();
  // The A fragment of m-tile mt at k-step kk, from the q tile.
  const auto load_qa = [&](uint32_t(&frag)[4], int mt, int kk) {
    ldmatrix_x4(frag, qt + (row0 + 16 * mt + lane % 16) * kQs + 16 * kk + 8 * (lane / 16));
  };
  uint32_t qa[MT == 1 ? DQK / 16 : 1][4];  // MT = 1: the warp's 16 rows, held for the whole pass
  if constexpr (MT == 1) {
#pragma unroll
    for (int kk = 0; kk < DQK / 16; ++kk) load_qa(qa[kk], 0, kk);
  }
  // The context of rows g and g + 8 of each m-tile within the chunk (global entries; rows past the run: one key, so
  // the softmax stays finite; not stored), and the least and most of the warp's rows': tiles below the least need no
  // mask, from the most on no work.
  const int k_end = static_cast<int>(a.k0 + a.c_end);
  int ctx[MT][2];
  int ctx_min = INT32_MAX, ctx_max = 0;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const int64_t r = row0 + 16 * mt + g + 8 * hr;
      ctx[mt][hr] = min(r < rows ? static_cast<int>(a.context_lens[t0 + r]) : 1, k_end);
      ctx_min = min(ctx_min, ctx[mt][hr]);
      ctx_max = max(ctx_max, ctx[mt][hr]);
    }
  }
#pragma unroll
  for (int off = 4; off < 32; off *= 2) {
    ctx_min = min(ctx_min, __shfl_xor_sync(0xffffffffu, ctx_min, off));
    ctx_max = max(ctx_max, __shfl_xor_sync(0xffffffffu, ctx_max, off));
  }
  float m[MT][2], l[MT][2];
  float acc[MT][kDvTiles][4] = {};
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      m[mt][hr] = -INFINITY, l[mt][hr] = 0.0f;
      const int64_t r = row0 + 16 * mt + g + 8 * hr;
      if (a.first || r >= rows) continue;
      // The earlier chunks' softmax: o unnormalised, ml the max and sum (a row's first chunk has a key for it).
      const int64_t at = (t0 + r) * a.H + h;
      m[mt][hr] = a.ml[2 * at], l[mt][hr] = a.ml[2 * at + 1];
      const float* src = a.o + at * a.Dv;
#pragma unroll
      for (int j = 0; j < kDvTiles; ++j) {
        const float2 x = *reinterpret_cast<const float2*>(src + 8 * j + 2 * c);
        acc[mt][j][2 * hr] = x.x, acc[mt][j][2 * hr + 1] = x.y;
      }
    }
  }
  // One K/V tile (buffer at ktile: K [kKeys][kQs], then V [kKeys][kVs]) of keys [j0, j0 + kKeys) into the rows.
  const auto attend_tile = [&](const uint16_t* ktile, int j0) {
    const uint16_t* vtile = ktile + kKeys * kQs;
    // S [16·MT rows, 64 keys] = q · Kᵀ.
    float s[MT][kKeys / 8][4] = {};
#pragma unroll
    for (int kk = 0; kk < DQK / 16; ++kk) {
      uint32_t frag[MT][4];
      if constexpr (MT > 1) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) load_qa(frag[mt], mt, kk);
      }
#pragma unroll
      for (int nt = 0; nt < kKeys / 8; nt += 2) {
        const int mat = lane / 8, r = lane % 8;  // keys 8nt.. at k, k + 8; keys 8(nt+1).. at k, k + 8
        uint32_t b[4];
        ldmatrix_x4(b, ktile + (8 * (nt + mat / 2) + r) * kQs + 16 * kk + 8 * (mat % 2));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          const uint32_t(&qf)[4] = MT == 1 ? qa[kk] : frag[mt];
          mma_bf16(s[mt][nt], qf, b[0], b[1]);
          mma_bf16(s[mt][nt + 1], qf, b[2], b[3]);
        }
      }
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      // Online softmax of rows g and g + 8; keys at or past a row's context are -inf.
      float corr[2];
      if (j0 + kKeys <= ctx_min) {
        online_softmax_tile(s[mt], [](int, int) { return true; }, a.softmax_scale, m[mt], l[mt], corr);
      } else {
        online_softmax_tile(s[mt], [&](int hr, int col) { return j0 + col < ctx[mt][hr]; }, a.softmax_scale, m[mt],
                            l[mt], corr);
      }
#pragma unroll
      for (int j = 0; j < kDvTiles; ++j) {
        acc[mt][j][0] *= corr[0], acc[mt][j][1] *= corr[0], acc[mt][j][2] *= corr[1], acc[mt][j][3] *= corr[1];
      }
    }
    // O += P · V: P's A registers are the score accumulators of n-tiles 2kk and 2kk + 1, rounded to BF16.
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      uint32_t pa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        pa[mt][0] = pack_bf16x2(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        pa[mt][1] = pack_bf16x2(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        pa[mt][2] = pack_bf16x2(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        pa[mt][3] = pack_bf16x2(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
      const int mat = lane / 8, r = lane % 8;
#pragma unroll
      for (int j = 0; j + 1 < kDvTiles; j += 2) {
        // Matrices (transposed): keys 16kk.. and 16kk + 8.. at columns 8j, then at 8j + 8 -> b0, b1 of j, j + 1.
        uint32_t b[4];
        ldmatrix_x4_trans(b, vtile + (16 * kk + 8 * (mat % 2) + r) * kVs + 8 * j + 8 * (mat / 2));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_bf16(acc[mt][j], pa[mt], b[0], b[1]);
          mma_bf16(acc[mt][j + 1], pa[mt], b[2], b[3]);
        }
      }
      if constexpr (kDvTiles % 2 == 1) {  // the last n-tile alone (lanes 16..31 give addresses ldmatrix ignores)
        uint32_t b[2];
        ldmatrix_x2_trans(b, vtile + (16 * kk + 8 * (mat % 2) + r) * kVs + 8 * (kDvTiles - 1));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) mma_bf16(acc[mt][kDvTiles - 1], pa[mt], b[0], b[1]);
      }
    }
  };
  const int64_t n_tiles = keys > 0 ? (keys + kKeys - 1) / kKeys : 0;
  for (int64_t tile = 0; tile < n_tiles; ++tile) {
    const int buf = static_cast<int>(tile % 2);
    if (tile + 1 < n_tiles) {  // the next tile's copies fly while this one is used
      uint16_t* next = kt0 + (1 - buf) * kBuf;
      stage_kv<DQK, DV, kThreads>(k, v, a.c_end, (tile + 1) * kKeys, next, next + kKeys * kQs);
      asm volatile("cp.async.wait_group 1;\n" ::: "memory");
    } else {
      asm volatile("cp.async.wait_group 0;\n" ::: "memory");
    }
    __syncthreads();
    const int j0 = static_cast<int>(a.k0 + tile * kKeys);  // the tile's first entry
    if (j0 < ctx_max) {  // else past every row of this warp (the block's later rows see more)
      attend_tile(kt0 + buf * kBuf, j0);
    }
    __syncthreads();  // the buffer is consumed before the next-but-one tile is staged into it
  }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const int64_t r = row0 + 16 * mt + g + 8 * hr;
      if (r >= rows) continue;
      const int64_t at = (t0 + r) * a.H + h;
      if (!a.last && c == 0) a.ml[2 * at] = m[mt][hr], a.ml[2 * at + 1] = l[mt][hr];
      const float inv = a.last ? 1.0f / l[mt][hr] : 1.0f;  // a later chunk continues from the unnormalised sums
      float* dst = a.o + at * a.Dv;
#pragma unroll
      for (int j = 0; j < kDvTiles; ++j) {
        *reinterpret_cast<float2*>(dst + 8 * j + 2 * c) =
            make_float2(acc[mt][j][2 * hr] * inv, acc[mt][j][2 * hr + 1] * inv);
      }
    }
  }
}

int g_prefill_rows_for_tests = 0;  // set_mla_prefill_for_tests
int64_t g_prefill_chunk_for_tests = 0;

unsigned grid_for(int64_t n) { return std::min(blocks_for(n, 256), 132u * 16u); }  // grid-stride loops

// Rows a warp (QUATRE_CUDA_MLA_PREFILL_ROWS: 16 or 32, the default).
int warp_rows() {
  static const int rows = [] {
    const char* v = std::getenv("QUATRE_CUDA_MLA_PREFILL_ROWS");
    return v != nullptr && std::atoi(v) == 16 ? 16 : 32;
  }();
  return g_prefill_rows_for_tests > 0 ? g_prefill_rows_for_tests : rows;
}

template <int DQK, int DV, int MT>
cudaError_t launch_attend(const MlaPrefillLaunch& a, cudaStream_t stream) {
  constexpr size_t shared = (kRows * (DQK + kPad) + 2 * kKeys * (DQK + kPad + DV + kPad)) * sizeof(uint16_t);
  const auto kernel = mla_prefill_attend_kernel<DQK, DV, MT>;
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared));
  if (e != cudaSuccess) return e;
  const dim3 grid(static_cast<unsigned>((a.n + kRows - 1) / kRows), static_cast<unsigned>(a.H));
  kernel<<<grid, kRows / MT * 2, shared, stream>>>(a);
  return cudaGetLastError();
}

template <int DQK, int DV>
cudaError_t launch_attend(const MlaPrefillLaunch& a, cudaStream_t stream) {
  return warp_rows() == 16 ? launch_attend<DQK, DV, 1>(a, stream) : launch_attend<DQK, DV, 2>(a, stream);
}

bool prefill_enabled() {
  static const bool on = env_switch_on("QUATRE_CUDA_MLA_PREFILL");
  return on;
}
int g_prefill_test_mode = -1;  // set_mla_prefill_for_tests

}  // namespace

bool mla_prefill_dims_supported(int64_t Dn, int64_t Dr, int64_t Dv) {
  return (Dn + Dr == 128 && Dv == 128) || (Dn + Dr == 48 && Dv == 24);
}

void set_mla_prefill_for_tests(int mode, int warp_rows, int64_t chunk_keys) {
  g_prefill_test_mode = mode;
  g_prefill_rows_for_tests = warp_rows;
  g_prefill_chunk_for_tests = chunk_keys;
}

int64_t mla_prefill_chunk_keys() {
  return g_prefill_chunk_for_tests > 0 ? g_prefill_chunk_for_tests : kMlaPrefillChunkKeys;
}

bool mla_prefill_pays(int64_t n, int64_t pairs, int64_t c_end, int64_t R, int64_t Dn, int64_t Dr, int64_t Dv) {
  if (g_prefill_test_mode >= 0) return g_prefill_test_mode == 1 && n >= 2;
  if (!prefill_enabled() || n < kMlaPrefillMinRun) return false;
  // Products saved in the attention (the absorbed form's 2R + Dr a pair and head against Dn + Dr + Dv) against
  // the expansion's (R · (Dn + Dv) a key and head, three BF16 terms each: the matmul's fp32 input).
  const double saved = static_cast<double>(pairs) * static_cast<double>(2 * R + Dr - (Dn + Dr + Dv));
  return saved >= 3.0 * static_cast<double>(c_end) * static_cast<double>(R * (Dn + Dv));
}

cudaError_t launch_mla_prefill_gather(const MlaPrefillLaunch& a, float* lat, cudaStream_t stream) {
  gather_latent_kernel<<<grid_for(a.c_end * (a.R + a.Dr)), 256, 0, stream>>>(a, lat);
  return cudaGetLastError();
}

cudaError_t launch_mla_prefill_pack(const MlaPrefillLaunch& a, const float* lat, const float* kv,
                                    cudaStream_t stream) {
  if (!mla_prefill_dims_supported(a.Dn, a.Dr, a.Dv) || reinterpret_cast<uintptr_t>(a.k) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(a.v) % 16 != 0 || reinterpret_cast<uintptr_t>(lat) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(kv) % 16 != 0) {
    return cudaErrorInvalidValue;
  }
  pack_kv_kernel<<<grid_for(a.c_end * a.H * (a.Dn + a.Dr + a.Dv) / 8), 256, 0, stream>>>(a, lat, kv, a.k, a.v);
  return cudaGetLastError();
}

cudaError_t launch_mla_prefill_attend(const MlaPrefillLaunch& a, cudaStream_t stream) {
  if (!mla_prefill_dims_supported(a.Dn, a.Dr, a.Dv)) return cudaErrorInvalidValue;
  return a.Dv == 128 ? launch_attend<128, 128>(a, stream) : launch_attend<48, 24>(a, stream);
}

}  // namespace quatre::cuda
