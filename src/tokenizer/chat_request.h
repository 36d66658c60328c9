// The typed chat request of PROTOCOL §2.3 (messages, chunks, tool calls, tools, settings), read from the
// chat-completions request JSON and validated by the rules of §2.4. Depends on core and json_value only:
// no Tekken, no rendering; every error is an InvalidRequest naming the field (`messages[3].tool_call_id`).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "tokenizer/json_value.h"

namespace quatre::tokenizer {

enum class Role { kSystem, kUser, kAssistant, kTool };
const char* role_name(Role role);  // "system", "user", "assistant", "tool"

struct ImageSize {
  int width = 0;
  int height = 0;
  bool operator==(const ImageSize&) const = default;
};

struct TextChunk {
  std::string text;
  bool operator==(const TextChunk&) const = default;
};

// An image as the client sent it: a data URL (`data:image/png;base64,...`), an http(s):// or file:// URL,
// or bare base64. `size` is filled when the pixel size is already known (tests, a caller that decoded it);
// otherwise the renderer asks its ImageSizeResolver.
struct ImageChunk {
  std::string source;
  std::optional<ImageSize> size;
  bool operator==(const ImageChunk&) const = default;
};

struct ThinkChunk {
  std::string thinking;
  bool closed = true;
  bool operator==(const ThinkChunk&) const = default;
};

using Chunk = std::variant<TextChunk, ImageChunk, ThinkChunk>;

// String content or a chunk list. The difference matters: only string assistant content is right-stripped
// (§2.6). A null content reads as "".
using Content = std::variant<std::string, std::vector<Chunk>>;

struct ToolCall {
  std::string id;
  std::string name;
  // As received: the JSON string, or the object serialized with json.dumps; "" for null/absent.
  // normalize_chat() turns it into the exact text that is rendered (§2.5.4).
  std::string arguments;
  bool operator==(const ToolCall&) const = default;
};

struct Message {
  Role role = Role::kUser;
  Content content;
  std::vector<ToolCall> tool_calls;  // assistant only
  bool prefix = false;               // assistant only (Mistral prefill)
  std::string tool_call_id;          // tool only
  std::optional<std::string> name;   // tool only; not rendered by v15
  bool operator==(const Message&) const = default;
};

struct Tool {
  std::string name;
  std::string description;  // "" when absent
  JsonValue parameters;     // an object; {} when absent
  bool operator==(const Tool&) const = default;
};

struct ChatRequest {
  std::vector<Message> messages;
  std::vector<Tool> tools;
  std::optional<std::string> reasoning_effort;  // absent/null -> the tokenizer's default (§2.9)
  bool continue_final_message = false;          // vLLM prefill (§2.11)
};

// The system prompt that `safe_prompt: true` prepends (Mistral behaviour, PROTOCOL §4.2).
inline constexpr std::string_view kSafePrompt =
    "Always assist with care, respect, and truth. Respond with utmost utility yet securely. Avoid harmful, "
    "unethical, prejudiced, or negative content. Ensure replies promote fairness and positivity.";

// Reads the chat-related fields of a chat-completions body and validates them (parse + validate below).
// Other fields (sampling, stream, ...) are ignored here; the server reads them.
ChatRequest parse_chat_request(const JsonValue& body);
ChatRequest parse_chat_request(std::string_view body_json);

// The rules of PROTOCOL §2.4 that span messages: roles and their order, the last message, prefix and
// continue_final_message, function names, tool-call/result pairing, tool parameter schemas.
void validate_chat_request(const ChatRequest& request);

// Structural check of a tool's `parameters` against the JSON Schema draft-07 meta-schema: the schema is an
// object (or boolean below the top), known keywords have the meta-schema's types (`type` names a simple type
// or a unique list of them, `properties` is an object of schemas, `required` a unique string array, ...),
// recursively. Unknown keywords are allowed (as in the meta-schema). Not checked: `pattern` regex syntax
// and `format` values. Throws InvalidRequest naming `path` and the offending keyword.
void check_json_schema_draft7(const JsonValue& schema, std::string_view path);

}  // namespace quatre::tokenizer
