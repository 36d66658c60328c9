// Element types of checkpoints and tensors, their sizes and names, and exact scalar conversions
// (bf16, f16, float8_e4m3fn <-> f32). Depends on the standard library only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace quatre {

enum class DType : uint8_t {
  F32,
  F16,
  BF16,
  F8_E4M3,  // float8_e4m3fn: no infinities, 0x7F/0xFF are NaN, max 448
  I32,
  I64,
  U8,
};

size_t dtype_size(DType t);
// The safetensors spelling: "F32", "F16", "BF16", "F8_E4M3", "I32", "I64", "U8".
std::string_view dtype_name(DType t);
std::optional<DType> parse_dtype(std::string_view safetensors_name);
bool is_float(DType t);

float bf16_to_f32(uint16_t bits);
uint16_t f32_to_bf16(float value);  // round to nearest even, NaN stays NaN
float f16_to_f32(uint16_t bits);
uint16_t f32_to_f16(float value);   // round to nearest even, overflow to inf
float fp8e4m3_to_f32(uint8_t bits);
// Round to nearest even like torch's .to(torch.float8_e4m3fn): finite values beyond the largest
// representable magnitude round to NaN unless `saturate`, which clamps them to +-448.
uint8_t f32_to_fp8e4m3(float value, bool saturate = true);

// Reads element i of a buffer of type t as f32 (float types only).
float load_as_f32(const void* data, DType t, size_t i);

}  // namespace quatre
