// Launchers of the CUDA backend's kernels (device code in the .cu files beside it). Plain C++ types only:
// .cu files include no fmt (its headers do not compile under nvcc in C++20 mode), so checks and messages live in
// cuda_backend.cpp. Every launcher enqueues on `stream` and returns the launch status. Depends on the CUDA runtime.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace quatre::cuda {

// Stored weight element types, as the kernels see them (mirrors the float DTypes of core/dtype.h), and quatre's
// 4-bit format (core/int4.h).
enum class WType : int { kF32, kBF16, kF16, kF8E4M3, kInt4 };

// 4-bit weights take group sizes that are multiples of this: a 16-byte load of 32 codes then lies in one group.
constexpr int kInt4GroupMultiple = 32;

// A weight [rows, cols] in device memory; value = float(w) * scale. kInt4: w holds the packed codes U8 [rows, cols/2]
// (column 2j in the low nibble of byte j) and the value is core/int4.h's rule, s * (code - 8) (symmetric) or
// s * code + m (asymmetric), with s, m the BF16 scale and offset of the element's group; scale stays 1.
// W8A8 (FP8 with a static activation scale a, core/backend.h): act_scale = a, and scale = a · weight_scale, so that
// every matmul kernel computes y = Σ_k fp8(x / a) · float(w) · scale (act_q, device_math.cuh, on its loads of x).
struct DevWeight {
  const void* w = nullptr;
  WType type = WType::kF32;
  float scale = 1.0f;
  const uint16_t* int4_scales = nullptr;   // kInt4: BF16 [rows, cols/group_size]
  const uint16_t* int4_offsets = nullptr;  // kInt4 asymmetric: BF16 [rows, cols/group_size]; null when symmetric
  int32_t group_size = 0;                  // kInt4: a multiple of kInt4GroupMultiple
  float act_scale = 0.0f;                  // W8A8: a > 0; 0: the input as is (W8A16)
};

// y[m, n] = Σ_k x[x_row(m), k] · w_e[n, k] · scale_e, for the M rows of a problem, with fp32 accumulation.
// Plain problems: one weight, x_rows/y_rows null (identity). Grouped (MoE) problems: rows are in blocks of
// `rows_per_group`; group g uses weight experts[group_expert[g]] (-1: the group is padding, skipped); a row with
// x_rows[m] < 0 is padding; y row m goes to y_rows[m] (when given), times row_scale[y_rows[m]] (when given).
struct MatmulProblem {
  const float* x = nullptr;
  int64_t ldx = 0;
  const int32_t* x_rows = nullptr;
  int64_t M = 0, N = 0, K = 0;
  // W8A8: x already holds each row's quantised values act_q(x, a) (FP8 values as floats, a the activation scale of
  // the row's weight): the kernels take them as they are (no division a load) and still multiply FP8 operands.
  bool x_quantized = false;
  // Optional: x as its BF16 terms (x_term_planes of them: split_bf16<planes>, mma.cuh), made once by
  // launch_split_terms or launch_silu_mul_terms: row r's at x_terms + planes·K·r as planes [planes][K] (rows indexed
  // as x's; each octet of k in the order those launches give). Only the kernels matmul_takes_terms names read them
  // (three terms: the same values as splitting x on every load); x stays required.
  const uint16_t* x_terms = nullptr;
  // Planes of x_terms a row: 3 (the terms above: fp32 activations exactly), or 1 (x rounded to BF16 alone: the 4-bit
  // experts' activations in BF16, one mma a block instead of three; int4_bf16_activations()).
  int x_term_planes = 3;
  // Optional: x quantised to int8 once (launch_quantize_q8 or launch_silu_mul_q8; core/int4.h round_q8_blocks): row
  // r's K bytes at x_q8 + K·r (each octet of k in the order {0, 2, 4, 6, 1, 3, 5, 7}) and its {d, Σ q} of each block
  // of kQ8Block k at x_q8_meta + 2·(K / kQ8Block)·r (rows indexed as x's; in groups of 64 rows, a prompt's experts,
  // by the problem's rows m instead: gathered through x_rows by launch_quantize_q8). Only the kernels
  // matmul_takes_q8 names read them (4-bit weights on the small tensor-core kernel: u8 codes times s8 activations),
  // and a group of 64 rows requires them; x stays required.
  const uint8_t* x_q8 = nullptr;
  const float* x_q8_meta = nullptr;
  DevWeight weight;                          // plain problems
  const DevWeight* experts = nullptr;        // grouped problems: device array [E]
  const int32_t* group_expert = nullptr;     // device [M / rows_per_group]
  // group_expert was written two or more launches back on this stream (the routed experts' down: the gate+up ran in
  // between), so a kernel launched as a dependent (pdl.cuh) may read it, and copy the experts' weights, before it
  // waits for the kernel ahead. Sound only while no kernel lets the next one start before its own wait (pdl.cuh's
  // rule): the kernel in between then cannot have started its dependent before the routing ended.
  bool grouping_ready = false;
  int rows_per_group = 0;
  float* y = nullptr;
  int64_t ldy = 0;
  const int32_t* y_rows = nullptr;
  const float* row_scale = nullptr;
  bool accumulate = false;                   // y += instead of y =
  // A second problem over the same x and shapes in the same launch (gate and up): weight2 or experts2 (same dtype)
  // into y2, when y2 is given.
  DevWeight weight2 = {};
  const DevWeight* experts2 = nullptr;
  float* y2 = nullptr;
  // With the second problem: y = silu(x·wᵀ) ⊙ (x·w2ᵀ), the SiLU-gated FFN's hidden (y2: scratch). On the FMA and
  // staged kernels in one pass (a column's gate sum meets its up sum in the store); elsewhere both problems, then
  // the gating.
  bool silu_gate = false;
  // Grouped problems: the real rows a group the caller expects (0: unknown); >= 1 lets the small tensor-core
  // kernel take groups of <= 8 rows (matmul_small_tc.cu, QUATRE_CUDA_SMALL_TC_MIN_HINT).
  float rows_hint = 0;
  // Scratch for the partial sums of a problem split over K (matmul_workspace_floats says how much; without it the
  // kernels make one pass).
  float* split_ws = nullptr;
  int64_t split_ws_floats = 0;
};
// Small M (<= 8 rows a group): BF16/FP8/4-bit weights with 2-8 rows expected on the tensor cores (swap AB; 4-bit
// codes go in exact and each 32-k block's sum is scaled after the mma), else FP8, BF16 or 4-bit rows of 512-4096 bytes
// (FP8 and BF16 8192 too, opt-in) through shared memory (a block's whole weight tile copied at once), else four lanes
// per output column, reading the weight with 16-byte loads (4-bit weights: 32 codes a load, dequantised in
// registers). Plain problems of 9-32
// rows with FP8, 4-bit (or small BF16) weights: the same tensor-core kernel, each weight fragment against every
// 8-row block. Otherwise the large-M tensor-core tile (split over K when its tiles leave SMs idle) or a 64x64
// shared-memory tile.
// One weight type per launch: weight2 and every expert share weight's type (and, 4-bit, the symmetry).
cudaError_t launch_matmul(const MatmulProblem& p, cudaStream_t stream);
// W8A8 inputs quantised once before the matmul (launch_quantize_act, x_quantized) instead of on every kernel's loads:
// plain problems of prequantize_min_rows() rows or more, a MoE's of 2 tokens or more (QUATRE_CUDA_PREQUANT=0: never;
// the same bits either way). Tests: as the environment says (-1), off (0) or on (1).
bool prequantize_enabled();
int64_t prequantize_min_rows();
void set_prequantize_for_tests(int mode);
// Whether launch_matmul gates a silu_gate problem in its kernel's store (the FMA and staged kernels); otherwise it
// runs both products, then launch_silu_mul over y.
bool matmul_gates_in_store(const MatmulProblem& p);
// Whether launch_matmul's kernel for p reads x_terms when given: 4-bit weights on the small tensor-core kernel, in
// groups (or one block) of <= 8 rows, K % 8 == 0 (QUATRE_CUDA_INT4_TERMS=0: never). Its 4-bit bodies otherwise split
// each activation load into the three terms, once a 16-column warp: at decode batch 64 most of their instructions.
bool matmul_takes_terms(const MatmulProblem& p);
// Tests: as QUATRE_CUDA_INT4_TERMS says (-1), never (0) or wherever the kernel can (1).
void set_terms_for_tests(int mode);
// Whether the routed 4-bit experts that take x_terms take them as one BF16 plane (x rounded to BF16: products of the
// 4-bit codes and BF16 activations, vLLM's numerics for a 4-bit model; one mma a block instead of three: H100, the
// whole 4-bit model, batch 64 60.5 -> 50.3 ms) rather than the three exact terms. With QUATRE_CUDA_INT4_ACT=bf16 and
// with q8 (the default: where q8 does not apply); QUATRE_CUDA_INT4_ACT=fp32 (read once) keeps the three terms.
bool int4_bf16_activations();
// Whether the 4-bit kernels multiply by activations quantised to int8 in blocks of kQ8Block k (core/int4.h
// round_q8_blocks: d = max |x| / 127, x / d rounded to nearest even; llama.cpp's Q8 activations), the codes' products
// as exact integers: the staged kernel (one-row groups: decode at batch 1) quantises in the kernel, 4 codes a dp4a
// instead of about one an instruction; the routed experts of larger steps on the small tensor-core kernel take x and
// the gated hidden quantised once (launch_quantize_q8, launch_silu_mul_q8) where matmul_takes_q8 (G % 128 == 0); with
// QUATRE_CUDA_Q8_WIDE=1 a prompt's in groups of 64 rows. The default (QUATRE_CUDA_INT4_ACT unset or q8; the BF16
// plane where neither applies, as int4_bf16_activations): H100, the whole 4-bit model, against the BF16 plane, batch
// 1 5.43 -> 5.25 ms, 64 43.88 -> 39.62, 128 56.41 -> 50.86.
bool int4_q8_activations();
// Tests: as QUATRE_CUDA_INT4_ACT says (-1), three terms (0), one BF16 plane (1) or q8 (2). The CUDA test fixture
// sets 0 (its comparisons with the CPU are at fp32 tolerances).
void set_int4_act_for_tests(int mode);
// Whether launch_matmul's kernel for p reads x_q8 when given (and int4_q8_activations()): 4-bit weights whose group
// size is a multiple of kQ8Block on the small tensor-core kernel, in groups (or one block) of <= 8 rows or, with
// QUATRE_CUDA_Q8_WIDE=1, in groups of 64 (8 row blocks: they require x_q8, gathered), K % kQ8Block == 0. Each
// 128-k chunk of a warp is then one weight group: u8 codes times s8 activations (m16n8k32, half the BF16 body's
// mmas), exact int32 sums over the chunk, one scaling by s·d a chunk.
bool matmul_takes_q8(const MatmulProblem& p);
// Whether a prompt's 4-bit experts with x_q8 may run in groups of 64 rows (QUATRE_CUDA_Q8_WIDE=1, read once).
bool q8_wide_groups();
// Tests: a prompt's 4-bit expert groups of 64 rows with x_q8 as QUATRE_CUDA_Q8_WIDE says (-1; off unless 1), off
// (0) or on (1).
void set_wide_q8_for_tests(int mode);
// Floats of split_ws launch_matmul would use for p (0: it runs in one pass): plain problems on the large-M
// tensor-core tile whose tiles leave SMs idle are split over K (QUATRE_CUDA_TC_SPLIT_K=0: never).
int64_t matmul_workspace_floats(const MatmulProblem& p);
// Tests: the small tensor-core kernel as QUATRE_CUDA_SMALL_TC says (-1), off (0), or on wherever it can run (1).
void set_small_tc_for_tests(int mode);
// Tests: W8A8 problems of the large-M tensor-core path on the FP8 mma kernel as QUATRE_CUDA_TC_FP8 says (-1), never (0:
// the three-term kernel takes them), or wherever it can run (1).
void set_tc_fp8_for_tests(int mode);
// The staged kernel (matmul_staged.cu) takes p when the small tensor-core kernel does not: FP8, BF16 or 4-bit weights
// with rows of 512-4096 bytes (4-bit: an even number of groups a row; FP8 and BF16 8192 too with
// QUATRE_CUDA_STAGED_LONG_ROWS=1), 16-byte aligned x and weights, <= 8 rows a group.
bool staged_applies(const MatmulProblem& p);
// Tests: the staged kernel as QUATRE_CUDA_STAGED says (-1), off (0), or on wherever it can run (1); pieces: 16-byte
// pieces a thread (4, 8 or 16; 0: as the launch chooses); stream: its streamed form as QUATRE_CUDA_STAGED_STREAM says
// (-1), off (0), or in 2 stages of 8 pieces or 3 of 4 (2, 3: pieces then unused); stream_blocks > 0 caps its grid
// (each block then walks more tiles).
void set_staged_for_tests(int mode, int pieces = 0, int stream = -1, int stream_blocks = 0);
// Tests: FP8 and BF16 rows of 8192 bytes on the staged kernel as QUATRE_CUDA_STAGED_LONG_ROWS says (-1; off unless 1),
// off (0) or on (1).
void set_staged_long_rows_for_tests(int mode);
// Programmatic dependent launch (pdl.cuh): whether the staged matmuls may start before the kernel ahead of them ends
// (on unless QUATRE_CUDA_PDL=0); tests: as the environment says (-1), off (0) or on (1).
bool pdl_enabled();
void set_pdl_for_tests(int mode);

cudaError_t launch_fill(float* p, int64_t n, float value, cudaStream_t stream);
// out[m, k] = fp8_e4m3(clamp(x[m, k] / a, ±448)) (x rows ldx apart; out [M, K] bytes): the W8A8 inputs, as act_q.
cudaError_t launch_quantize_fp8(const float* x, int64_t ldx, int64_t M, int64_t K, float a, uint8_t* out,
                                cudaStream_t stream);
// The same over gathered rows: out[m, :] from x row rows[m] (rows null: m; < 0: FP8 zeros), divided by
// group_scale[m / G] (null: a) — a MoE's sorted rows, each group with its expert's activation scale.
cudaError_t launch_quantize_fp8_rows(const float* x, int64_t ldx, const int32_t* rows, int64_t M, int64_t K,
                                     const float* group_scale, int G, float a, uint8_t* out, cudaStream_t stream);
// out[m, :] = the quantised silu(g[m, :]) · u[m, :] (g, u [M, K] fp32), divided by group_scale[m / G]: a MoE's
// gated hidden rows into its down projection's W8A8 input, launch_silu_mul then launch_quantize_fp8_rows in one pass.
// With g_scale and u_scale (both or neither), g and u are first multiplied by their group's (unscaled GEMM sums).
cudaError_t launch_silu_mul_quantize_fp8(const float* g, const float* u, int64_t M, int64_t K,
                                         const float* group_scale, int G, uint8_t* out, cudaStream_t stream,
                                         const float* g_scale = nullptr, const float* u_scale = nullptr);
// out[m, k] = act_q(x[m, k], a) (x rows ldx apart; out [M, K]): a W8A8 matmul's input quantised once, as FP8 values
// in floats, for a launch with x_quantized (its kernels otherwise divide each load, once a column tile).
cudaError_t launch_quantize_act(const float* x, int64_t ldx, int64_t M, int64_t K, float a, float* out,
                                cudaStream_t stream);
// g[m, :] = act_q(silu(g[m, :]) · u[m, :], experts[group_expert[m / G]].act_scale) (g, u [M, K]; padding groups left
// as they are): a MoE's gated hidden as its W8A8 down projection's x_quantized input (launch_silu_mul, then the
// quantisation the down's kernels would make on their loads).
cudaError_t launch_silu_mul_act_q(float* g, const float* u, int64_t M, int64_t K, const DevWeight* experts,
                                  const int32_t* group_expert, int G, cudaStream_t stream);
cudaError_t launch_dequant_rows(const DevWeight& w, int64_t cols, const int32_t* ids, int64_t n_ids, float* out,
                                cudaStream_t stream);  // out[i,:] = w[ids[i],:] (ids null: row i), any WType
cudaError_t launch_rms_norm(const float* x, int64_t M, int64_t n, const DevWeight& g, float eps, float* y,
                            cudaStream_t stream);
cudaError_t launch_add(float* x, const float* y, int64_t n, cudaStream_t stream);
cudaError_t launch_split_cols(const float* x, int64_t M, int64_t n, int64_t n_left, float* left, float* right,
                              cudaStream_t stream);
cudaError_t launch_gather_rows(const float* x, int64_t n, const int32_t* rows, int64_t n_rows, float* y,
                               cudaStream_t stream);
// y[rows[i], :] = values[i, :] for i < n_rows (rows of width n).
cudaError_t launch_scatter_rows(const float* values, int64_t n, const int32_t* rows, int64_t n_rows, float* y,
                                cudaStream_t stream);
// In place: interleaved pairs of every head's rope slice of q and of k_rope; then q *= Llama-4 temperature.
// q or k_rope null: not rotated.
cudaError_t launch_rope(float* q, float* k_rope, int64_t T, int64_t n_heads, int64_t nope, int64_t rope_dim,
                        const float* inv_freq, const int32_t* positions, float beta, int64_t original_max,
                        cudaStream_t stream);
cudaError_t launch_kv_write(void* cache, WType cache_type, int64_t width, const float* c_kv, int64_t R, const float* k_rope,
                            int64_t Dr, const int64_t* slots, int64_t T, cudaStream_t stream);
// cache[slots[t]] = [RMSNorm(kv_a[t, :R]) · norm | RoPE(kv_a[t, R:R+Dr])] (kv_a [T, R+Dr] fp32), and q
// [T, H*(nope+Dr)] roped in place as launch_rope does (q null: not).
struct RopeKvWriteLaunch {
  float* q = nullptr;
  int64_t n_heads = 0, nope = 0;
  void* cache = nullptr;
  WType cache_type = WType::kBF16;
  const float* kv_a = nullptr;
  int64_t R = 0, Dr = 0;
  DevWeight norm;
  float eps = 0;
  const float* inv_freq = nullptr;      // [Dr/2]
  const int32_t* positions = nullptr;   // [T]
  float llama4_beta = 0;
  int64_t llama4_original_max = 1;
  const int64_t* slots = nullptr;       // [T]
  int64_t T = 0;
};
cudaError_t launch_rope_kv_write(const RopeKvWriteLaunch& l, cudaStream_t stream);
cudaError_t launch_silu_mul(float* g, const float* u, int64_t n, cudaStream_t stream);  // g = silu(g) * u

// The vision tower's ops (vision_kernels.cu), fp32. In place on q and k [N, H*dh]: Pixtral's 2-D RoPE as
// core/backend.h's Rope2dArgs says (freq [dh/2], rows and cols [N] on the device; dh a multiple of 4).
cudaError_t launch_rope_2d(float* q, float* k, int64_t N, int64_t H, int64_t dh, const float* freq,
                           const int32_t* rows, const int32_t* cols, bool half_pairs, cudaStream_t stream);
// Softmax attention inside segments (SegmentAttentionArgs): out [N, H*dh] from q, k, v [N, H*dh]. The work comes as
// n_tiles tiles (device [n_tiles][4] = q0, q1, k0, k1): the query rows [q0, q1), at most tile_rows of them (what
// segment_attention_tile_rows gave for the call), of the segment [k0, k1), which are its keys. Two kernels:
//   - tensor cores (mma.sync, fp32 sums) where dh % 4 == 0 and dh <= 64 (<= 128 with bf16_operands): q, k, v and
//     the softmax weights P as three BF16 terms each (fp32 up to summation order; products of terms below 2^-16 of the leading
//     one left out) or, with bf16_operands, as one (rounded to BF16: vLLM's numerics, ~1e-3 relative);
//   - fp32 on the CUDA cores (the rest, or QUATRE_CUDA_VISION_TC=0).
// dh <= kSegmentAttentionMaxHeadDim (else cudaErrorInvalidValue, as for a tile_rows the kernel does not take).
constexpr int64_t kSegmentAttentionMaxHeadDim = 128;
int segment_attention_tile_rows(int64_t dh, bool bf16_operands, int64_t N, int64_t H);
cudaError_t launch_segment_attention(const float* q, const float* k, const float* v, float* out, int64_t H,
                                     int64_t dh, const int32_t* tiles, int64_t n_tiles, int tile_rows, float scale,
                                     bool bf16_operands, cudaStream_t stream);
// Tests: -1 the environment's choice (QUATRE_CUDA_VISION_TC), 0 the fp32 kernel for every call, 1 the tensor cores
// where they apply; rows 64 or 128 forces the tensor cores' tile rows (0: the rule).
void set_segment_attention_tc_for_tests(int mode, int rows = 0);
// x <- 0.5·x·(1 + erf(x/√2)) over n floats, each operation rounded as the CPU's float expression.
cudaError_t launch_gelu(float* x, int64_t n, cudaStream_t stream);
// A prompt's 4-bit routed experts through cuBLASLt's BF16 GEMM (cuda_backend_moe.cpp): out[m, k] = bf16(x[rows[m],
// k]) (rows null: m; a row of -1: zeros); K % 4 == 0, ldx % 4 == 0, x 16-byte and out 8-byte aligned.
cudaError_t launch_bf16_rows(const float* x, int64_t ldx, const int32_t* rows, int64_t M, int64_t K, uint16_t* out,
                             cudaStream_t stream);
// out[m, k] = bf16(silu(g[m, k]) · u[m, k]) (launch_silu_mul's arithmetic, then rounded); g, u [M, K].
cudaError_t launch_silu_mul_bf16(const float* g, const float* u, int64_t M, int64_t K, uint16_t* out,
                                 cudaStream_t stream);
// The 4-bit gate, up and down of experts ids[0..n) (device) of a table [3][E] (gate, up [F, D]; down [D, F]) as
// BF16, each value core/int4.h's fp32 one rounded to nearest even: matrix j of ids[i] at out + (3i + j)·F·D.
// D, F % 32 == 0 (and G % 32: a 16-byte load in one group), out 16-byte aligned.
cudaError_t launch_dequant_int4_bf16(const DevWeight* table, int64_t E, const int32_t* ids, int n, bool is_symmetric,
                                     int64_t F, int64_t D, uint16_t* out, cudaStream_t stream);
// out[m][t] = term t of x[m, :] (rows ldx apart; out [M][planes][K] BF16, split_bf16<planes>, planes 3 or 1), each
// octet of k in the order {0, 4, 1, 5, 2, 6, 3, 7} (the 4-bit small tensor-core kernel's slots): a matmul's x_terms.
// K % 8 == 0, ldx % 4 == 0, x and out 16-byte aligned.
cudaError_t launch_split_terms(const float* x, int64_t ldx, int64_t M, int64_t K, uint16_t* out, int planes,
                               cudaStream_t stream);
// g = silu(g) · u (launch_silu_mul's arithmetic; g, u [M, K]) and its terms into out as launch_split_terms writes
// them: a MoE's gated hidden as its down projection's x and x_terms in one pass.
cudaError_t launch_silu_mul_terms(float* g, const float* u, int64_t M, int64_t K, uint16_t* out, int planes,
                                  cudaStream_t stream);
// x [M, K] (rows ldx apart) quantised to int8 by core/int4.h's round_q8_blocks rule into a matmul's x_q8 (out [M][K]
// bytes, each octet of k in the order {0, 2, 4, 6, 1, 3, 5, 7}) and x_q8_meta (meta [M][K / kQ8Block][2]: the
// block's d = max |x| / 127 and Σ q). K % kQ8Block == 0, ldx % 4 == 0, x 16-byte and out, meta 8-byte aligned.
// x_rows (optional, [M]): out row m is x's row x_rows[m] (a grouping's sorted tokens), zeros where it is negative.
cudaError_t launch_quantize_q8(const float* x, int64_t ldx, int64_t M, int64_t K, uint8_t* out, float* meta,
                               cudaStream_t stream, const int32_t* x_rows = nullptr);
// g = silu(g) · u (launch_silu_mul's arithmetic) and g quantised as launch_quantize_q8 writes it: a MoE's gated hidden
// as its down projection's x and x_q8 in one pass.
cudaError_t launch_silu_mul_q8(float* g, const float* u, int64_t M, int64_t K, uint8_t* out, float* meta,
                               cudaStream_t stream);

// Softmax over E logits per token, the K largest (ties: lower index), renormalised, times scaling.
cudaError_t launch_route(const float* logits, int64_t T, int64_t E, int64_t K, float scaling, int32_t* ids,
                         float* gates, cudaStream_t stream);
// Groups the T*K (token, k) pairs by expert, each expert's rows padded to a multiple of rows_per_group:
// sorted_token[r] (-1: padding), sorted_pair[r] (-1: padding) for r < max_rows, group_expert[g] (-1: unused).
// One block; max_rows = T*K + E*(rows_per_group-1) rounded up to rows_per_group.
cudaError_t launch_moe_align(const int32_t* ids, int64_t T, int64_t K, int64_t E, int rows_per_group,
                             int64_t max_rows, int32_t* sorted_token, int32_t* sorted_pair, int32_t* group_expert,
                             cudaStream_t stream);
// launch_route then launch_moe_align in one block (for few tokens: its 32 warps route them in turn).
cudaError_t launch_route_align(const float* logits, int64_t T, int64_t E, int64_t K, float scaling, int32_t* ids,
                               float* gates, int rows_per_group, int64_t max_rows, int32_t* sorted_token,
                               int32_t* sorted_pair, int32_t* group_expert, cudaStream_t stream);
// v = Σ_k pair_out[t*K + k, :] (+ plus[t,:] after the sum, when given); y[t,:] = v, or y[t,:] += v (accumulate).
cudaError_t launch_sum_pairs(const float* pair_out, int64_t T, int64_t K, int64_t D, const float* plus,
                             bool accumulate, float* y, cudaStream_t stream);
// The same with pair p's row gathered and scaled on the way: pair_out[p, :] = rows[row_of_pair[p], :] · scale[p]
// (rounded products, then launch_sum_pairs's sums: the bits of a scatter then the sum, in one pass).
// With row_scale, each row is first multiplied by row_scale[row / G] (unscaled GEMM sums; rounded products).
cudaError_t launch_sum_scaled_pairs(const float* rows, const int32_t* row_of_pair, const float* scale, int64_t T,
                                    int64_t K, int64_t D, const float* plus, bool accumulate, float* y,
                                    cudaStream_t stream, const float* row_scale = nullptr, int G = 1);
// row_of_pair[sorted_pair[r]] = r for the rows r < n whose pair is not padding (< 0).
cudaError_t launch_invert_rows(const int32_t* sorted_pair, int64_t n, int32_t* row_of_pair, cudaStream_t stream);

struct MlaLaunch {
  const float* q = nullptr;        // [T, H*(Dn+Dr)]
  const void* cache = nullptr;     // [n_blocks, block_size, R+Dr]
  WType cache_type = WType::kF32;  // F32, BF16 or F8E4M3 (scale 1)
  int64_t block_size = 0;
  const float* kv_b = nullptr;     // [H*(Dn+Dv), R] dequantised fp32 (the per-head kernel; null on the tiled path)
  DevWeight kv_b_w;                // the same, as stored in a float type (the tiled path: mla_is_tiled)
  bool kv_b_w_stored = false;      // kv_b_w is the stored weight, not a copy made in the step: read before pdl_wait
  const int32_t* seq_index = nullptr, *context_lens = nullptr, *block_tables = nullptr;
  int32_t max_blocks_per_seq = 0;
  int64_t T = 0, H = 0, R = 0, Dn = 0, Dr = 0, Dv = 0;
  float softmax_scale = 0;
  bool naive = false;
  bool bf16_operands = false;      // the tensor-core key pass takes q and P rounded to BF16 (MlaArgs)
  bool split_scores = false;       // the tensor-core key pass's score halves (set by launch_mla_attend_tc)
  float* o = nullptr;              // [T, H*Dv]
  // The tiled path (absorbed, R <= 256): q_abs = W_UKᵀ q_nope [T*H, R] scratch; keys split over n_splits blocks per
  // (token, 8 heads), their partial contexts in split_ctx [T*H*n_splits, R] (one split: written over q_abs) and
  // (max, sum) in split_ml [T*H*n_splits, 2], then combined with W_UV by a second kernel.
  int n_splits = 1;
  float* split_ctx = nullptr;
  float* split_ml = nullptr;
  float* q_abs = nullptr;
};
// Whether launch_mla takes the tiled path (absorbed, R <= 256, R and Dr multiples of 4, a 16-byte aligned cache);
// otherwise one block per (token, head) over the fp32 kv_b, with n_splits = 1.
bool mla_is_tiled(int64_t R, int64_t Dr, bool naive, const void* cache);
// The split count the tiled path should use for T tokens with contexts up to max_context.
int mla_splits(int64_t T, int64_t H, int64_t R, int64_t Dr, bool naive, WType cache_type, int64_t max_context);
// Whether the tiled path's key pass runs on the tensor cores (mla_tc.cu: BF16 or FP8 cache, R a multiple of 32 up to
// 256, Dr a multiple of 16; QUATRE_CUDA_MLA_TC=0 turns it off), with tiles of mla_attend_tc_tile_keys() keys: 64,
// or 32 or 16 where T tokens' blocks with contexts up to max_context would not fill the card (the launch takes
// max_context = max_blocks_per_seq * block_size).
bool mla_attend_is_tc(int64_t R, int64_t Dr, bool naive, WType cache_type);
int mla_attend_tc_tile_keys(int64_t T, int64_t H, int64_t max_context);
// Tests: force the tile size (16, 32 or 64) over the heuristic and QUATRE_CUDA_MLA_TC_KEYS; any other value gives
// the environment's choice back.
void set_mla_tc_keys_for_tests(int keys);
// Tests: the tensor-core key pass's split scores (mla_tc.cu) as QUATRE_CUDA_MLA_SPLIT_SCORES says (-1), off (0) or on
// (1, where the tile has 32 or 64 keys).
void set_mla_split_scores_for_tests(int mode);
cudaError_t launch_mla_attend_tc(const MlaLaunch& a, cudaStream_t stream);
// Tests: the tiled path's combine a block per (head, 16 tokens), reading W_UV once for them (-1: for 16 tokens or
// more unless QUATRE_CUDA_MLA_COMBINE_TOKENS=0), or a block per (token, head, 32 columns) (0), or the former for any
// number of tokens (1).
void set_mla_combine_tokens_for_tests(int mode);
// Largest R + Dr + Dn + Dv the per-head kernel's shared memory holds (checked by the caller).
constexpr int64_t kMlaMaxWidth = 4096;
// The tiled path's three kernels (q_abs, attention over the key splits, combine with W_UV) one at a time (for the
// profiler; in this order), or all; the per-head path is one kernel, run for kAll and kAttend.
enum class MlaStage : int { kAll, kQAbs, kAttend, kCombine };
cudaError_t launch_mla(const MlaLaunch& a, cudaStream_t stream, MlaStage stage = MlaStage::kAll);


// MLA over a prompt run in the naive form with BF16 operands (mla_prefill.cu): n consecutive tokens of one sequence,
// token i attending to the sequence's entries [0, context_lens[i]), contexts growing along the run. The keys go in
// chunks of at most kMlaPrefillChunkKeys: a launch covers the entries [k0, k0 + c_end), and the running softmax of
// each (row, head) passes from chunk to chunk through o (unnormalised) and ml (max and sum).
struct MlaPrefillLaunch {
  const float* q = nullptr;             // [n, H*(Dn+Dr)] the run's rows, RoPE and temperature applied
  const void* cache = nullptr;          // [n_blocks, block_size, R+Dr]
  WType cache_type = WType::kBF16;      // F32, BF16 or F8E4M3 (scale 1)
  int64_t block_size = 0;
  const int32_t* table = nullptr;       // device: the sequence's row of the block tables
  const int32_t* context_lens = nullptr;  // device [n]
  int64_t n = 0, c_end = 0, H = 0, R = 0, Dn = 0, Dr = 0, Dv = 0;  // c_end: the chunk's keys
  int64_t k0 = 0;                       // the chunk's first entry
  bool first = true, last = true;       // the run's first and last chunk
  float softmax_scale = 0;
  uint16_t* k = nullptr;                // scratch BF16 [H, c_end, Dn+Dr], 16-byte aligned
  uint16_t* v = nullptr;                // scratch BF16 [H, c_end, Dv], 16-byte aligned
  float* ml = nullptr;                  // scratch [n, H, 2]: the running max and sum between chunks (one chunk: unused)
  float* o = nullptr;                   // [n, H*Dv] the run's rows
};
// Runs shorter than this stay on the absorbed kernels; keys go in chunks of that many (the scratch is ~50 KB a key
// at the model's dims).
constexpr int64_t kMlaPrefillMinRun = 128;
constexpr int64_t kMlaPrefillChunkKeys = 8192;
// The head sizes the attend kernel is built for: Dn + Dr = 128, Dv = 128 (the model) and 48, 24 (the demo model).
bool mla_prefill_dims_supported(int64_t Dn, int64_t Dr, int64_t Dv);
// Whether a run of n tokens over `pairs` (token, key) pairs and c_end keys is cheaper in the naive form, the key
// expansion counted (QUATRE_CUDA_MLA_PREFILL=0: never); tests force it on or off.
bool mla_prefill_pays(int64_t n, int64_t pairs, int64_t c_end, int64_t R, int64_t Dn, int64_t Dr, int64_t Dv);
// Tests: -1: the cost rule; 0: never; 1: every run of >= 2 tokens; warp_rows: the attend kernel's rows a warp (16 or
// 32; 0: as QUATRE_CUDA_MLA_PREFILL_ROWS says); chunk_keys: keys a chunk (0: kMlaPrefillChunkKeys).
void set_mla_prefill_for_tests(int mode, int warp_rows = 0, int64_t chunk_keys = 0);
int64_t mla_prefill_chunk_keys();
// lat [c_end, R+Dr] fp32 = the run's cache rows [0, c_end).
cudaError_t launch_mla_prefill_gather(const MlaPrefillLaunch& a, float* lat, cudaStream_t stream);
// After the caller's kv [c_end, H*(Dn+Dv)] = lat[:, :R] · kv_bᵀ: K and V packed (lat, kv 16-byte aligned), then the
// attention into o.
cudaError_t launch_mla_prefill_pack(const MlaPrefillLaunch& a, const float* lat, const float* kv, cudaStream_t stream);
cudaError_t launch_mla_prefill_attend(const MlaPrefillLaunch& a, cudaStream_t stream);
}  // namespace quatre::cuda

namespace quatre::cuda {
// w[i] = quantise(u_i / scale), u_i uniform in [-sqrt(3)·std, sqrt(3)·std] from a counter hash of (seed, i);
// std = 0: w[i] = quantise(value / scale) for every i. Float WTypes only.
cudaError_t launch_init_weight(void* w, WType t, int64_t n, float std, float value, float scale, uint64_t seed,
                               cudaStream_t stream);
// A symmetric 4-bit weight [rows, cols] of n_groups = rows * cols / group_size groups: codes [rows*cols/2] uniform
// in 0..15 from a counter hash of (seed, byte), every BF16 scale = bf16(scale).
cudaError_t launch_init_int4_weight(uint8_t* codes, int64_t n_code_bytes, uint16_t* scales, int64_t n_groups,
                                    float scale, uint64_t seed, cudaStream_t stream);
}  // namespace quatre::cuda

namespace quatre::cuda {
// Sampling summaries (sampling_kernels.cu): the layouts of core's LogitEdit, RowSummaryArgs and RowSummaryStats
// (cuda_backend.cpp asserts they match).
struct DevLogitEdit {
  int32_t row, id;
  float rep, add;
};
struct DevRowArgs {
  int32_t k;
  float temperature;
};
struct DevRowStats {
  double sum_exp, log_sum_exp;
  float max_logit;
  int32_t n_finite, n_top, reserved;
};
constexpr int kMaxDevSummaryK = 256;
// logits [R,V]: l <- (rep != 1 ? (l > 0 ? l / rep : l * rep) : l) + add for each edit, each operation rounded on its
// own; edits sorted by (row, id), several edits of one entry applied in order.
cudaError_t launch_logit_edits(float* logits, int64_t V, const DevLogitEdit* edits, int64_t n_edits, cudaStream_t stream);
// One block per row with args[r].k > 0: count, max and double sums of the finite logits (l > -inf), and the top
// min(k, n_finite) ids by logit descending, lower id first on ties, into ids/top [R, stride] (the rest: -1, -inf).
cudaError_t launch_summarize_rows(const float* logits, int64_t R, int64_t V, const DevRowArgs* args, int stride,
                                  DevRowStats* stats, int32_t* ids, float* top, cudaStream_t stream);
}  // namespace quatre::cuda
