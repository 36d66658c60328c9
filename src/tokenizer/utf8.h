// UTF-8 validation and CPython-compatible "replace" decoding (every maximal invalid subsequence becomes one
// U+FFFD, Unicode §3.9 "maximal subpart" practice), shared by encode, decode and the incremental decoder.
// Internal to src/tokenizer; depends on the standard library only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace quatre::tokenizer::utf8 {

inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// One decoding step at the start of a byte string: a whole valid character, or the maximal invalid
// subsequence that the replace decoder turns into one U+FFFD.
struct Unit {
  uint32_t n_bytes = 0;
  bool is_valid = false;
  bool is_truncated = false;  // a valid prefix cut short by the end of the input (so also !is_valid)
};
Unit next_unit(std::string_view bytes);  // bytes must not be empty

// Length of the longest prefix of `bytes` that is valid UTF-8 (whole characters only).
size_t valid_prefix_length(std::string_view bytes);

// Appends `bytes` to `out`, each maximal invalid subsequence replaced by U+FFFD. Equals Python's
// bytes.decode("utf-8", "replace") and the WHATWG TextDecoder.
void append_replacing_invalid(std::string_view bytes, std::string& out);

// Length of the prefix of `bytes` that decodes the same whatever bytes follow: all of it, except a trailing
// valid-but-incomplete character (at most 3 bytes), which must wait for more bytes.
size_t stable_prefix_length(std::string_view bytes);

}  // namespace quatre::tokenizer::utf8
