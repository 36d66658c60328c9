// Normalization of a validated chat request before rendering (PROTOCOL §2.5, mistral-common's v15 normalizer):
// merge consecutive user/assistant messages, coalesce text, reorder tool results, normalize tool-call
// arguments. Depends on chat_request and json_value only.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/chat_request.h"

namespace quatre::tokenizer {

// The messages as they are rendered:
//  * runs of consecutive user (or assistant) messages become one message: text from different messages is
//    joined with "\n\n", adjacent text chunks of one message with "" (v15); empty texts are skipped; images
//    and thinking chunks stay in place and break text runs; text-only content becomes a string;
//    merged assistant messages concatenate their tool calls and OR their `prefix`;
//  * system and tool messages are never merged (their own text chunks are coalesced the same way);
//  * within a run of tool messages, results are sorted by the position of their tool_call_id among the calls
//    of the latest assistant message (unknown ids last, ties in original order);
//  * every ToolCall::arguments becomes the exact JSON text to render (normalize_tool_arguments).
std::vector<Message> normalize_messages(const std::vector<Message>& messages);

// §2.5.4: "" -> "{}"; valid JSON -> re-serialized like json.dumps(json.loads(s), ensure_ascii=False);
// anything else -> the string itself as a JSON string literal (what mistral-common ends up rendering).
std::string normalize_tool_arguments(std::string_view raw);

}  // namespace quatre::tokenizer
