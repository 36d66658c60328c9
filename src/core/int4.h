// quatre's 4-bit weight format (issue #11): packed 4-bit codes, groups of `group_size` input columns, BF16
// scales (and BF16 offsets when asymmetric), the exact dequantisation rule, and the round-to-nearest quantiser.
// Depends on core/dtype only.
#pragma once

#include <cstdint>

namespace quatre {

// A linear weight W [out, in] (in % group_size == 0, group_size even) is stored as
//   codes   U8   [out, in/2]            column 2j of a row in the low nibble of byte j, column 2j+1 in the high nibble
//   scales  BF16 [out, in/group_size]   s, one per row and group of group_size consecutive columns
//   offsets BF16 [out, in/group_size]   m, asymmetric only
// and read back, in fp32, as
//   symmetric:  W[o,i] = s * (code - 8)          (the product is exact in fp32)
//   asymmetric: W[o,i] = s * code + m            (the product is exact; one fp32 rounding of the sum)
// with s, m the group's BF16 values widened exactly to fp32.
struct Int4Layout {
  int64_t group_size = 128;
  bool is_symmetric = true;
};

inline constexpr int kInt4SymmetricZero = 8;

// Code of column i of a packed row.
inline uint8_t int4_code(const uint8_t* codes, int64_t i) {
  return static_cast<uint8_t>((codes[i / 2] >> ((i % 2) * 4)) & 0xF);
}

// The rule above for one value: code, and the group's BF16 bits (offset_bits ignored when symmetric).
float int4_value(uint8_t code, uint16_t scale_bits, uint16_t offset_bits, bool is_symmetric);

// out[0, n) = the row's values. codes [n/2], scales [n/G], offsets [n/G] or nullptr (symmetric).
void dequantize_int4_row(const uint8_t* codes, const uint16_t* scales, const uint16_t* offsets, int64_t n,
                         int64_t group_size, float* out);

// Round-to-nearest quantisation of one row w[0, n) (n % group_size == 0), per group g:
//   symmetric:  s = bf16(max|w| / 7), code = 8 + clamp(round(w / s), -8, 7)    (s = 0: every code 8)
//   asymmetric: m = bf16(min w), s = bf16((max w - m) / 15), code = clamp(round((w - m) / s), 0, 15)
// Values already on a group's grid (s·k with a BF16 s that max|w| = 7s reaches; s·k + m likewise) come back
// exactly. offsets may be nullptr when symmetric. Non-finite input values are a caller error (CHECKed).
void quantize_int4_row(const float* w, int64_t n, const Int4Layout& layout, uint8_t* codes, uint16_t* scales,
                       uint16_t* offsets);

// How a 4-bit weight's kernels may take their activations (the weights' rule above is the same for all):
//   kFp32: as they are;  kBf16: each rounded to BF16 (nearest even; vLLM's numerics for a 4-bit model);
//   kQ8: quantised to int8 in blocks of kQ8Block along a row (llama.cpp's Q8 activations), see round_q8_blocks.
enum class Int4Activations { kFp32, kBf16, kQ8 };

// Columns an int8 activation scale spans: one 4-bit group at the default G = 128, so the CUDA kernels' integer sums run
// over a whole group before they meet a scale.
inline constexpr int64_t kQ8Block = 128;

// x[0, n) (one row) quantised to int8 in blocks of kQ8Block columns (the last may be shorter) and back: with
// a = max |x| of the block, q = x · (127 / a) rounded to nearest even, x' = q · (a / 127); a block with
// a < kQ8MinBlockMax (a = 0, or so small that 127 / a would overflow) comes back as zeros. A NaN or an infinity in a
// block makes the whole block NaN (the CUDA kernel's sums: NaN or infinite). The CUDA 4-bit kernels' activations by
// default (QUATRE_CUDA_INT4_ACT=q8).
inline constexpr float kQ8MinBlockMax = 127.0f * 1.17549435e-38f;  // 127 · FLT_MIN
void round_q8_blocks(float* x, int64_t n);

// x[0, n) rounded as `mode` says (kFp32: unchanged).
void round_int4_activations(float* x, int64_t n, Int4Activations mode);

}  // namespace quatre
