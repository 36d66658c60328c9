// libFuzzer target: the output parser on arbitrary id sequences of a small synthetic vocabulary. Property (the
// library's promise): the concatenated StreamingOutputParser deltas equal parse_output() of the same ids.
// Nothing may throw: the parsers never throw on malformed model output.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/check.h"
#include "synth/synthetic_tekken.h"
#include "tokenizer/output_parser.h"

namespace {

using namespace quatre;
using namespace quatre::tokenizer;

const Tekken& fuzz_tekken() {
  static const Tekken tekken = Tekken::from_json(synth::synthetic_tekken_json(1300), "synthetic fuzz tekken");
  return tekken;
}

// Input bytes -> ids. Bytes 0x00..0x0F pick the special ids the parser routes (and a few it drops); 0x1F
// takes the next two bytes as any id of the vocabulary; every other byte is that byte's BPE id, so ASCII
// seeds read as text.
std::vector<TokenId> ids_of(const uint8_t* data, size_t size, const Tekken& tekken) {
  static const char* const kSpecials[] = {"</s>", "[THINK]", "[/THINK]", "[TOOL_CALLS]", "[ARGS]", "<s>",
                                          "[INST]", "[/INST]", "[CALL_ID]", "<unk>", "[IMG]", "<pad>",
                                          "[TOOL_RESULTS]", "[SYSTEM_PROMPT]", "[MODEL_SETTINGS]", "[IMG_END]"};
  std::vector<TokenId> ids;
  for (size_t i = 0; i < size; ++i) {
    const uint8_t b = data[i];
    if (b < 16) {
      ids.push_back(tekken.require_special(kSpecials[b]));
    } else if (b == 0x1F && i + 2 < size) {
      ids.push_back(static_cast<TokenId>((data[i + 1] << 8 | data[i + 2]) % tekken.vocab_size()));
      i += 2;
    } else {
      ids.push_back(tekken.n_special() + b);
    }
  }
  return ids;
}

// Rebuilds a ParsedOutput from deltas, checking the stream's own invariants (as tests/tokenizer does).
ParsedOutput collect(const std::vector<OutputDelta>& deltas) {
  ParsedOutput out;
  std::string reasoning;
  for (const OutputDelta& d : deltas) {
    switch (d.kind) {
      case OutputDelta::Kind::kReasoning:
        CHECK(!d.text.empty());
        reasoning += d.text;
        break;
      case OutputDelta::Kind::kContent:
        CHECK(!d.text.empty());
        out.content += d.text;
        break;
      case OutputDelta::Kind::kToolCallStart:
        CHECK(d.tool_index == static_cast<int>(out.tool_calls.size())) << d.tool_index;
        out.tool_calls.push_back(ParsedToolCall{.id = d.tool_call_id, .name = d.name, .arguments = ""});
        break;
      case OutputDelta::Kind::kToolCallArguments:
        CHECK(!d.text.empty());
        CHECK(d.tool_index + 1 == static_cast<int>(out.tool_calls.size())) << d.tool_index;
        out.tool_calls.back().arguments += d.text;
        break;
    }
  }
  if (!reasoning.empty()) out.reasoning = reasoning;
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Tekken& tekken = fuzz_tekken();
  const std::vector<TokenId> ids = ids_of(data, size, tekken);
  const ParsedOutput whole = parse_output(ids, tekken, random_tool_call_ids(7));

  StreamingOutputParser parser(tekken, random_tool_call_ids(7));
  std::vector<OutputDelta> deltas;
  for (TokenId id : ids) {
    for (OutputDelta& d : parser.push(id)) deltas.push_back(std::move(d));
  }
  for (OutputDelta& d : parser.finish()) deltas.push_back(std::move(d));
  const ParsedOutput streamed = collect(deltas);

  CHECK(streamed.reasoning == whole.reasoning) << "reasoning: streamed '" << streamed.reasoning.value_or("<none>")
                                               << "', whole '" << whole.reasoning.value_or("<none>") << "'";
  CHECK(streamed.content == whole.content) << "content: streamed '" << streamed.content << "', whole '"
                                           << whole.content << "'";
  CHECK(streamed.tool_calls == whole.tool_calls) << "tool calls: streamed " << streamed.tool_calls.size()
                                                 << ", whole " << whole.tool_calls.size();
  return 0;
}
