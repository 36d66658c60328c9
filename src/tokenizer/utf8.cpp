// UTF-8 validation and replace decoding (see utf8.h). Depends on the standard library only.
#include "tokenizer/utf8.h"

#include <cstring>

namespace quatre::tokenizer::utf8 {

// Well-formed sequences (Unicode Table 3-7): the lead byte fixes the number of continuation bytes and the
// range allowed for the first of them (which excludes overlongs, surrogates D800..DFFF and > U+10FFFF).
Unit next_unit(std::string_view bytes) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const uint8_t lead = p[0];
  if (lead < 0x80) return {.n_bytes = 1, .is_valid = true};
  uint32_t n_continuation = 0;
  uint8_t lo = 0x80;
  uint8_t hi = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    n_continuation = 1;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    n_continuation = 2;
    if (lead == 0xE0) lo = 0xA0;  // no overlongs
    if (lead == 0xED) hi = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    n_continuation = 3;
    if (lead == 0xF0) lo = 0x90;  // no overlongs
    if (lead == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {.n_bytes = 1};  // 80..C1, F5..FF never start a character
  }
  for (uint32_t k = 1; k <= n_continuation; ++k) {
    if (k >= bytes.size()) return {.n_bytes = k, .is_truncated = true};
    if (p[k] < lo || p[k] > hi) return {.n_bytes = k};
    lo = 0x80;
    hi = 0xBF;
  }
  return {.n_bytes = n_continuation + 1, .is_valid = true};
}

size_t valid_prefix_length(std::string_view bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    // ASCII fast path, 8 bytes at a time.
    while (i + 8 <= bytes.size()) {
      uint64_t word;
      std::memcpy(&word, bytes.data() + i, 8);
      if (word & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= bytes.size()) break;
    const Unit u = next_unit(bytes.substr(i));
    if (!u.is_valid) return i;
    i += u.n_bytes;
  }
  return bytes.size();
}

void append_replacing_invalid(std::string_view bytes, std::string& out) {
  while (!bytes.empty()) {
    const size_t n_valid = valid_prefix_length(bytes);
    out.append(bytes.substr(0, n_valid));
    bytes.remove_prefix(n_valid);
    if (bytes.empty()) break;
    out.append(kReplacement);
    bytes.remove_prefix(next_unit(bytes).n_bytes);
  }
}

size_t stable_prefix_length(std::string_view bytes) {
  size_t i = valid_prefix_length(bytes);
  while (i < bytes.size()) {
    const Unit u = next_unit(bytes.substr(i));
    if (u.is_truncated) return i;
    i += u.n_bytes;
  }
  return bytes.size();
}

}  // namespace quatre::tokenizer::utf8
