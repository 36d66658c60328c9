// The UTF-8 automaton of the content of a JSON string, used to take whole vocabulary subtrees at once inside
// strings: state 0 is a character boundary, states 1..7 are inside a multi-byte character (how many continuation
// bytes remain and the range of the next one). Plain content = printable ASCII but '"' and '\\', or well-formed
// multi-byte characters (no overlongs, no surrogates, at most U+10FFFF).
#pragma once

#include <cstdint>

namespace quatre::grammar {

inline constexpr int kUtf8States = 8;

// The state after byte b, or -1 when b cannot be plain string content there.
inline int utf8_plain_next(int u, uint8_t b) {
  const bool cont = b >= 0x80 && b <= 0xBF;
  switch (u) {
    case 0:
      if (b < 0x80) return b >= 0x20 && b != '"' && b != '\\' ? 0 : -1;
      if (b >= 0xC2 && b <= 0xDF) return 1;
      if (b == 0xE0) return 3;
      if (b == 0xED) return 4;
      if (b >= 0xE1 && b <= 0xEF) return 2;
      if (b == 0xF0) return 6;
      if (b >= 0xF1 && b <= 0xF3) return 5;
      if (b == 0xF4) return 7;
      return -1;
    case 1: return cont ? 0 : -1;                         // one more continuation byte
    case 2: return cont ? 1 : -1;                         // two more
    case 3: return b >= 0xA0 && b <= 0xBF ? 1 : -1;       // E0: no overlong
    case 4: return b >= 0x80 && b <= 0x9F ? 1 : -1;       // ED: no surrogate
    case 5: return cont ? 2 : -1;                         // three more
    case 6: return b >= 0x90 && b <= 0xBF ? 2 : -1;       // F0: no overlong
    case 7: return b >= 0x80 && b <= 0x8F ? 2 : -1;       // F4: at most U+10FFFF
    default: return -1;
  }
}

}  // namespace quatre::grammar
