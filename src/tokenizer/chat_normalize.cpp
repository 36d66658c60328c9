// Normalization of chat messages before rendering (PROTOCOL §2.5). Depends on chat_request and json_value only.
#include <algorithm>
#include <limits>

#include "core/error.h"
#include "tokenizer/chat_normalize.h"

namespace quatre::tokenizer {
namespace {

constexpr std::string_view kMessageJoin = "\n\n";  // between text of different messages
constexpr std::string_view kChunkJoin = "";        // between text chunks of one message (v15)

// Coalesces the contents of consecutive messages (or of one message): see normalize_messages.
Content aggregate_contents(const std::vector<const Content*>& contents) {
  std::vector<Chunk> out;
  std::string text;
  bool has_text = false;  // a text run is open (possibly with empty text so far)
  const auto flush = [&] {
    if (has_text) out.emplace_back(TextChunk{std::move(text)});
    text.clear();
    has_text = false;
  };
  for (const Content* content : contents) {
    bool is_new_message = has_text;  // the next text continues text from a previous message
    if (const auto* s = std::get_if<std::string>(content)) {
      if (s->empty()) continue;
      if (is_new_message) text += kMessageJoin;
      text += *s;
      has_text = true;
      continue;
    }
    for (const Chunk& chunk : std::get<std::vector<Chunk>>(*content)) {
      if (const auto* t = std::get_if<TextChunk>(&chunk)) {
        if (t->text.empty()) continue;
        if (has_text) text += is_new_message ? kMessageJoin : kChunkJoin;
        text += t->text;
        has_text = true;
        is_new_message = false;
      } else {
        flush();
        out.push_back(chunk);
      }
    }
  }
  if (out.empty()) return text;  // text only: a plain string ("" when nothing)
  flush();
  return out;
}

Message merge_run(const std::vector<Message>& messages, size_t begin, size_t end) {
  Message merged;
  merged.role = messages[begin].role;
  std::vector<const Content*> contents;
  for (size_t i = begin; i < end; ++i) {
    const Message& m = messages[i];
    contents.push_back(&m.content);
    for (const ToolCall& call : m.tool_calls) {
      merged.tool_calls.push_back(
          ToolCall{.id = call.id, .name = call.name, .arguments = normalize_tool_arguments(call.arguments)});
    }
    merged.prefix = merged.prefix || m.prefix;
    merged.tool_call_id = m.tool_call_id;
    merged.name = m.name;
  }
  merged.content = aggregate_contents(contents);
  return merged;
}

// Sorts a run of tool results by the position of their call among `call_ids` (unknown last), stable.
void sort_tool_results(std::vector<Message>& out, size_t begin, const std::vector<std::string>& call_ids) {
  const auto rank = [&](const Message& m) {
    auto it = std::find(call_ids.begin(), call_ids.end(), m.tool_call_id);
    return it == call_ids.end() ? std::numeric_limits<size_t>::max() : static_cast<size_t>(it - call_ids.begin());
  };
  std::stable_sort(out.begin() + static_cast<std::ptrdiff_t>(begin), out.end(),
                   [&](const Message& a, const Message& b) { return rank(a) < rank(b); });
}

}  // namespace

std::string normalize_tool_arguments(std::string_view raw) {
  if (raw.empty()) return "{}";
  try {
    return dump_json(parse_json(raw, "tool call arguments"));
  } catch (const InvalidRequest&) {
    return json_quote(raw);
  }
}

std::vector<Message> normalize_messages(const std::vector<Message>& messages) {
  std::vector<Message> out;
  std::vector<std::string> latest_call_ids;
  size_t i = 0;
  while (i < messages.size()) {
    const Role role = messages[i].role;
    size_t end = i + 1;
    while (end < messages.size() && messages[end].role == role) ++end;
    if (role == Role::kUser || role == Role::kAssistant) {
      out.push_back(merge_run(messages, i, end));
      if (role == Role::kAssistant) {
        latest_call_ids.clear();
        for (const ToolCall& call : out.back().tool_calls) latest_call_ids.push_back(call.id);
      }
    } else {
      const size_t run_begin = out.size();
      for (size_t k = i; k < end; ++k) out.push_back(merge_run(messages, k, k + 1));
      if (role == Role::kTool) sort_tool_results(out, run_begin, latest_call_ids);
    }
    i = end;
  }
  return out;
}

}  // namespace quatre::tokenizer
