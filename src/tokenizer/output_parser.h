// Parses what the model generated (PROTOCOL §3.3 reasoning, §3.4 tool calls) from token ids: whole
// (parse_output) or token by token (StreamingOutputParser, whose concatenated deltas equal the whole parse).
// Depends on the Tekken API only; never throws on malformed model output.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "tokenizer/tekken.h"

namespace quatre::tokenizer {

// Returns a fresh tool-call id: 9 characters of [A-Za-z0-9] (Mistral convention, §3.4).
using ToolCallIdGenerator = std::function<std::string()>;
ToolCallIdGenerator random_tool_call_ids(uint64_t seed);  // deterministic, for tests
ToolCallIdGenerator random_tool_call_ids();               // seeded from std::random_device

// The special ids the parsers route, looked up by name; a name the file lacks never matches.
struct OutputTokens {
  std::optional<TokenId> eos;         // "</s>"
  std::optional<TokenId> think;       // "[THINK]"
  std::optional<TokenId> end_think;   // "[/THINK]"
  std::optional<TokenId> tool_calls;  // "[TOOL_CALLS]"
  std::optional<TokenId> args;        // "[ARGS]"
  static OutputTokens of(const Tekken& tekken);
};

struct ParsedToolCall {
  std::string id;
  std::string name;
  std::string arguments;  // verbatim as generated; "{}" when empty
  bool operator==(const ParsedToolCall&) const = default;
};

struct ParsedOutput {
  std::optional<std::string> reasoning;  // nullopt when there is no think block or it is empty
  std::string content;                   // "" when none (the server shows null next to tool calls)
  std::vector<ParsedToolCall> tool_calls;
};

// The rules, shared by both parsers. Ids after the first EOS are ignored. Reasoning is the text between the
// first [THINK] and the first [/THINK] after it (to the end when unclosed); everything else is the body.
// In the body, text before the first [TOOL_CALLS] is content; each [TOOL_CALLS] starts a segment whose name
// ends at [ARGS] or at the first '{' of its text (the '{' then opens the arguments), is trimmed of ASCII
// whitespace, and whose remaining text is the arguments; a segment with neither [ARGS] nor '{' is dropped
// (vLLM). Any other special id is dropped; special ids and the think block split the text into runs that
// are decoded separately (PROTOCOL §1.6), so a UTF-8 character cut by one becomes U+FFFD on both sides.
ParsedOutput parse_output(std::span<const TokenId> ids, const Tekken& tekken, const ToolCallIdGenerator& next_id);

struct OutputDelta {
  enum class Kind { kReasoning, kContent, kToolCallStart, kToolCallArguments };
  Kind kind = Kind::kContent;
  std::string text;          // reasoning, content or argument text (kToolCallStart: empty)
  int tool_index = -1;       // 0-based call counter (tool-call kinds only)
  std::string tool_call_id;  // kToolCallStart only
  std::string name;          // kToolCallStart only

  static OutputDelta reasoning(std::string text);
  static OutputDelta content(std::string text);
  static OutputDelta call_start(int tool_index, std::string tool_call_id, std::string name);
  static OutputDelta arguments(int tool_index, std::string text);
  bool operator==(const OutputDelta&) const = default;
};

// Feeds generated ids one at a time; each push returns the deltas that became certain. Text never ends in
// the middle of a UTF-8 character (IncrementalDecoder). A call's name is held back until [ARGS] or '{';
// a call that ends without argument text gets a final "{}" fragment. Concatenating every delta gives
// exactly parse_output() of the same ids (with the same id generator state).
class StreamingOutputParser {
 public:
  StreamingOutputParser(const Tekken& tekken, ToolCallIdGenerator next_id);
  std::vector<OutputDelta> push(TokenId id);  // EOS finishes, like finish()
  std::vector<OutputDelta> finish();          // end of generation: flushes the decoder, closes the last call
  int n_tool_calls() const { return n_calls_; }

 private:
  enum class Phase { kBeforeThink, kInThink, kAfterThink };
  enum class Body { kContent, kName, kArgs };

  void route_text(std::string text, std::vector<OutputDelta>& out);
  void route_special(TokenId id, std::vector<OutputDelta>& out);
  void start_call(std::string_view name, std::vector<OutputDelta>& out);
  void close_segment(std::vector<OutputDelta>& out);
  void emit_arguments(std::string text, std::vector<OutputDelta>& out);

  const Tekken* tekken_;
  OutputTokens tokens_;
  IncrementalDecoder decoder_;
  ToolCallIdGenerator next_id_;
  Phase phase_ = Phase::kBeforeThink;
  Body body_ = Body::kContent;
  std::string name_text_;  // text of the current segment before [ARGS] or '{'
  bool has_arguments_ = false;
  int n_calls_ = 0;
  bool is_finished_ = false;
};

}  // namespace quatre::tokenizer
