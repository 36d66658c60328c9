// libFuzzer target: a chat-completions request body through parse_chat_request, validate_chat_request and
// render_chat with a small synthetic Tekken (built once). InvalidRequest is the expected refusal; anything else
// is a finding.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/check.h"
#include "core/error.h"
#include "synth/synthetic_tekken.h"
#include "tokenizer/chat_render.h"
#include "tokenizer/chat_request.h"

namespace {

using namespace quatre;
using namespace quatre::tokenizer;

const Tekken& fuzz_tekken() {
  static const Tekken tekken = Tekken::from_json(synth::synthetic_tekken_json(1300), "synthetic fuzz tekken");
  return tekken;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Tekken& tekken = fuzz_tekken();
  try {
    const ChatRequest request = parse_chat_request(std::string_view(reinterpret_cast<const char*>(data), size));
    validate_chat_request(request);
    const RenderedPrompt prompt = render_chat(request, tekken);
    CHECK(!prompt.ids.empty());
    for (TokenId id : prompt.ids) CHECK(id >= 0 && id < tekken.vocab_size()) << id;
  } catch (const InvalidRequest&) {
  }
  return 0;
}
