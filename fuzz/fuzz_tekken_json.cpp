// libFuzzer target: tekken.json text through Tekken::from_json; a file it accepts must encode and decode.
// LoadError is the expected refusal; anything else is a finding.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/check.h"
#include "core/error.h"
#include "tokenizer/tekken.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace quatre;
  using tokenizer::Tekken;
  try {
    const Tekken tekken = Tekken::from_json({reinterpret_cast<const char*>(data), size}, "fuzz tekken.json");
    // Every accepted vocabulary holds the 256 bytes, so plain text round-trips (STYLE (e)).
    const std::string_view text = "Hello, wörld! 123 [INST] \xf0\x9f\x98\x80\n\t";
    const std::vector<tokenizer::TokenId> ids = tekken.encode(text);
    for (tokenizer::TokenId id : ids) CHECK(id >= tekken.n_special() && id < tekken.vocab_size()) << id;
    CHECK(tekken.decode(ids) == text) << tekken.decode(ids);
    for (tokenizer::TokenId id = 0; id < std::min(tekken.vocab_size(), 1100); ++id) (void)tekken.id_to_piece(id);
  } catch (const LoadError&) {
  }
  return 0;
}
