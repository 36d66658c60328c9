// The generation fields of a chat or text completion request (PROTOCOL §4.2, §4.8): sampling, max tokens, n,
// stop, seed, logprobs, stream, tool_choice, response_format. The messages and tools are read by
// tokenizer::parse_chat_request. Unknown fields are ignored; a wrong type or value is an ApiError 400 naming
// the field. Depends on engine/sampling, tokenizer/json_value and server/api_error.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/sampling.h"
#include "tokenizer/json_value.h"

namespace quatre::server {

struct Limits {
  int32_t max_n = 16;
  int32_t max_stop_strings = 16;
  int32_t max_messages = 4096;
  int32_t max_images = 8;
};

struct ToolChoice {
  enum class Kind { kNone, kAuto, kRequired, kNamed };
  Kind kind = Kind::kAuto;
  std::string name;  // kNamed
};

struct ResponseFormat {
  enum class Kind { kText, kJsonObject, kJsonSchema };
  Kind kind = Kind::kText;
  std::string name;           // json_schema.name
  tokenizer::JsonValue schema;  // json_schema.schema
  bool strict = false;
};

struct GenerationParams {
  std::string model;  // "" when absent
  engine::SamplingParams sampling;
  std::optional<int32_t> max_tokens;  // max_completion_tokens wins over max_tokens
  int32_t n = 1;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool logprobs = false;
  int32_t top_logprobs = 0;  // chat: top_logprobs; completions: the integer `logprobs`
  bool stream = false;
  bool include_usage = false;
  bool ignore_eos = false;
  bool echo = false;  // completions only
  // chat only:
  ToolChoice tool_choice;
  bool parallel_tool_calls = true;
  ResponseFormat response_format;
  bool include_reasoning = true;
};

enum class Endpoint { kChat, kCompletions };

// Reads and checks the fields; `has_tools` decides tool_choice's default (auto with tools, else none).
GenerationParams parse_generation_params(const tokenizer::JsonValue& body, Endpoint endpoint, bool has_tools,
                                         const Limits& limits);

}  // namespace quatre::server
