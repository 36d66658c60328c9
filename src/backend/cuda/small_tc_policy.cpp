// Where the small tensor-core kernel (matmul_small_tc.cu) runs a problem and how it takes x: its environment
// switches and A/B knobs (read once), the tests' overrides, and the shape rules launch_matmul and the kernel's
// launcher share. Host code. Depends on kernels.h and env_switch.h.
#include "backend/cuda/small_tc_policy.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "backend/cuda/env_switch.h"
#include "core/int4.h"

namespace quatre::cuda {
namespace {

constexpr int kRows = kSmallTcRows;
constexpr int kMaxRowBlocks = kSmallTcMaxRowBlocks;
constexpr int kWideRows = kSmallTcWideRows;

std::atomic<int> g_test_mode{-1};  // set_small_tc_for_tests

bool env_enabled() {
  static const bool on = env_switch_on("QUATRE_CUDA_SMALL_TC");
  return on;
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

// The most rows a plain problem takes here: 32 (QUATRE_CUDA_SMALL_TC_MAX_ROWS, 8-64, read once, for A/B timing).
// Above, the large-M tile with its K splits reads x once a 64-row tile instead of once a 16-column block: H100, 16
// FP8 layers, context 2048, 64 here against 32: batch 48 32.74 -> 30.66 ms, batch 64 27.49 -> 25.50, 8-32 the same.
int plain_max_rows() {
  static const int rows = [] {
    const char* v = std::getenv("QUATRE_CUDA_SMALL_TC_MAX_ROWS");
    const int r = v != nullptr ? std::atoi(v) : 0;
    return r >= kRows && r <= kMaxRowBlocks * kRows ? r : 4 * kRows;
  }();
  return rows;
}

// Grouped problems come here from this many real rows a group expected (rows_hint): 1, or
// QUATRE_CUDA_SMALL_TC_MIN_HINT (read once, for A/B timing); fewer (or a hint of 0) go to the FMA kernel. At 2 the
// routed experts of decode batches 4-63 (about one row a group) ran on the FMA kernel's multi-row bodies; at 1,
// H100, 16 FP8 layers, context 2048: batch 8 7.50 -> 7.33 ms, 32 22.15 -> 18.33, 48 30.90 -> 22.68; the 4-bit
// model's batch 8 23.31 -> 19.81, 32 77.50 -> 49.13. (Batch 1 stays off it: the MoE passes no hint, unless
// QUATRE_CUDA_ONE_ROW_HINT gives one.)
float hint_from_env(const char* name, float fallback) {
  const char* v = std::getenv(name);
  const float h = v != nullptr ? std::strtof(v, nullptr) : 0.0f;
  return h > 0.0f ? h : fallback;
}
float grouped_min_hint() {
  static const float hint = hint_from_env("QUATRE_CUDA_SMALL_TC_MIN_HINT", 1.0f);
  return hint;
}
// 4-bit groups the staged kernel can take come here from 1 real row a group expected, as other weights
// (QUATRE_CUDA_SMALL_TC_MIN_HINT_INT4: A/B). It was 2 while this kernel's 4-bit body multiplied three terms of each
// activation and decoded nibbles one by one (H100, the whole 4-bit model, batch 8: 16.93 ms on the staged kernel,
// 19.84 here). With one BF16 plane and a mask-and-OR a pair of codes, the same model and card (context 2048): batch
// 8 15.50 -> 14.27 ms, 16 26.05 -> 21.77, 32 44.55 -> 32.04, 48 60.00 -> 38.25. One token passes no hint: its
// groups stay on the staged kernel (5.45 ms against 6.07 here).
float grouped_min_hint_int4() {
  static const float hint = hint_from_env("QUATRE_CUDA_SMALL_TC_MIN_HINT_INT4", 1.0f);
  return hint;
}


std::atomic<int> g_terms_mode{-1};  // set_terms_for_tests
std::atomic<int> g_int4_act_mode{-1};  // set_int4_act_for_tests


std::atomic<int> g_wide_q8_mode{-1};  // set_wide_q8_for_tests

// A prompt's expert groups of 64 rows (kWideRows) on 8 row blocks with x_q8 gathered: QUATRE_CUDA_Q8_WIDE=1 (read
// once) until measured (its first form, the activations loaded from global memory, was latency-bound: H100, a 1K
// prompt 352 ms against 330 through cuBLASLt's BF16 GEMMs); off, they go to those GEMMs or the tile kernel.
bool wide_q8_enabled() {
  static const bool env_on = env_int("QUATRE_CUDA_Q8_WIDE", 0) == 1;
  return switch_on(g_wide_q8_mode.load(), env_on);
}


}  // namespace

// W8A8 inputs quantised beforehand through the three-term bodies (QUATRE_CUDA_W8A8_TERMS=3, read once: A/B timing)
// instead of the one-term ones: the same values (the lower terms are zeros).
bool w8a8_split_terms() {
  static const bool on = [] {
    const char* v = std::getenv("QUATRE_CUDA_W8A8_TERMS");
    return v != nullptr && std::strcmp(v, "3") == 0;
  }();
  return on;
}

// One row block: a group of <= 8 rows, or a plain problem of <= 8.
bool one_row_block(const MatmulProblem& p) { return p.experts != nullptr ? p.rows_per_group <= kRows : p.M <= kRows; }

// Where the 4-bit bodies take x_terms: one row block, K % 8 == 0 (the planes' octets), unless
// QUATRE_CUDA_INT4_TERMS=0 (read once: A/B timing).
bool terms_apply(const MatmulProblem& p) {
  static const bool env_on = env_switch_on("QUATRE_CUDA_INT4_TERMS");
  if (!switch_on(g_terms_mode.load(), env_on)) return false;
  return p.weight.type == WType::kInt4 && p.K % 8 == 0 && one_row_block(p);
}

// Where the 4-bit bodies take x_q8: K and the group size multiples of kQ8Block (a chunk of 128 k is one weight group
// and one block of x), q8 activations on; one row block as terms_apply, or a wide group of experts (8 row blocks,
// K <= INT32_MAX / 64; x_q8 gathered and given: launch_small_tc refuses it otherwise). (Experts and experts2 have
// weight's layout: the host checks.)
bool q8_apply(const MatmulProblem& p) {
  if (p.weight.type != WType::kInt4 || !int4_q8_activations() || p.K % kQ8Block != 0 ||
      p.weight.group_size % kQ8Block != 0 || (p.y2 != nullptr && p.weight2.group_size % kQ8Block != 0)) {
    return false;
  }
  if (one_row_block(p)) return true;
  return p.experts != nullptr && p.rows_per_group == kWideRows && p.K <= INT32_MAX / kWideRows && wide_q8_enabled();
}

void set_small_tc_for_tests(int mode) { g_test_mode.store(mode); }
void set_terms_for_tests(int mode) { g_terms_mode.store(mode); }
void set_int4_act_for_tests(int mode) { g_int4_act_mode.store(mode); }
void set_wide_q8_for_tests(int mode) { g_wide_q8_mode.store(mode); }
bool q8_wide_groups() { return wide_q8_enabled(); }

// QUATRE_CUDA_INT4_ACT: fp32 0, bf16 1, q8 2 (read once; unset or anything else: q8).
int int4_act_mode() {
  if (const int mode = g_int4_act_mode.load(); mode >= 0) return mode;
  static const int env_mode = [] {
    const char* v = std::getenv("QUATRE_CUDA_INT4_ACT");
    if (v != nullptr && std::strcmp(v, "fp32") == 0) return 0;
    return v != nullptr && std::strcmp(v, "bf16") == 0 ? 1 : 2;
  }();
  return env_mode;
}
bool int4_bf16_activations() { return int4_act_mode() != 0; }
bool int4_q8_activations() { return int4_act_mode() == 2; }
bool small_tc_takes_terms(const MatmulProblem& p) { return terms_apply(p); }
bool small_tc_takes_q8(const MatmulProblem& p) { return q8_apply(p); }

bool small_tc_applies(const MatmulProblem& p) {
  const int mode = g_test_mode.load();
  if (mode == 0 || (mode < 0 && !env_enabled())) return false;
  const bool fp8 = p.weight.type == WType::kF8E4M3, int4 = p.weight.type == WType::kInt4;
  if (!fp8 && !int4 && p.weight.type != WType::kBF16) return false;
  const int k_load = fp8 ? 16 : int4 ? 32 : 8;  // k of a 16-byte load
  if (p.K % k_load != 0 || p.K > INT32_MAX / 2) return false;  // whole 16-byte loads; k is an int
  // 4-bit: a load's 32 codes in one group (G % 32 == 0), whole groups.
  if (int4 && (p.weight.group_size <= 0 || p.weight.group_size % kInt4GroupMultiple != 0 ||
               p.K % p.weight.group_size != 0)) {
    return false;
  }
  if (p.ldx % 4 != 0 || !aligned16(p.x)) return false;                 // float4 activation loads
  const bool grouped = p.experts != nullptr;
  if (grouped ? p.rows_per_group > kRows && !q8_apply(p) : p.M > kMaxRowBlocks * kRows) return false;
  // Row blocks step through x by ldx, in int offsets.
  if (!grouped && p.M > kRows && (p.x_rows != nullptr || p.ldx > INT32_MAX / (kMaxRowBlocks * kRows))) return false;
  if (!grouped && (!aligned16(p.weight.w) || (p.y2 != nullptr && !aligned16(p.weight2.w)))) return false;
  if (mode == 1) return true;
  if (!grouped && p.M > plain_max_rows()) return false;
  // BF16 weights of more than 8 rows spill in the row-block variants: measured on an H100 at 64 rows, the 1 GB lm_head
  // took 1.64 ms here against ~1.1 on the large-M tile; the 1 MB router was faster here. Large BF16 ones stay there.
  if (!grouped && !fp8 && p.M > kRows && p.N * p.K > (int64_t{16} << 20)) return false;
  if (!grouped) return p.M >= 2;
  return p.rows_hint >= (int4 && staged_applies(p) ? grouped_min_hint_int4() : grouped_min_hint());
}


}  // namespace quatre::cuda
