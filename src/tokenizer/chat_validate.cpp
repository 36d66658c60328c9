// The cross-message validation rules of PROTOCOL §2.4 (mistral-common's v13+ request validator, serving mode).
// Depends on core and chat_request only.
#include <algorithm>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/error.h"
#include "tokenizer/chat_request.h"

namespace quatre::tokenizer {
namespace {

[[noreturn]] void fail(std::string_view path, std::string_view problem) {
  throw InvalidRequest(fmt::format("{}: {}", path, problem));
}

std::string msg_path(size_t i) { return fmt::format("messages[{}]", i); }

// ^[a-zA-Z0-9_-]{1,64}$
bool is_valid_function_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

void check_function_name(std::string_view name, const std::string& path) {
  if (!is_valid_function_name(name)) {
    fail(path, fmt::format("\"{}\" is not a valid function name; use 1 to 64 characters among a-z, A-Z, 0-9, "
                           "'_' and '-'", name));
  }
}

// system -> {user, assistant, system}; user -> {assistant, system, user};
// assistant -> {assistant, user, tool}; tool -> {assistant, tool, user}.
bool may_follow(Role prev, Role cur) {
  switch (prev) {
    case Role::kSystem: return cur != Role::kTool;
    case Role::kUser: return cur != Role::kTool;
    case Role::kAssistant: return cur != Role::kSystem;
    case Role::kTool: return cur != Role::kSystem;
  }
  return false;
}

bool has_content(const Content& c) {
  if (const auto* s = std::get_if<std::string>(&c)) return !s->empty();
  return !std::get<std::vector<Chunk>>(c).empty();
}

void check_structure(const ChatRequest& req) {
  const auto& msgs = req.messages;
  if (msgs.empty()) fail("messages", "must contain at least one message");
  if (msgs.size() == 1 && msgs[0].role != Role::kSystem && msgs[0].role != Role::kUser) {
    fail("messages[0].role", fmt::format("a conversation of one message must be a user or system message, got {}",
                                         role_name(msgs[0].role)));
  }
  for (size_t i = 1; i < msgs.size(); ++i) {
    if (!may_follow(msgs[i - 1].role, msgs[i].role)) {
      fail(msg_path(i) + ".role", fmt::format("a {} message cannot follow a {} message ({})", role_name(msgs[i].role),
                                              role_name(msgs[i - 1].role), msg_path(i - 1)));
    }
  }
  const size_t last = msgs.size() - 1;
  const Message& final_msg = msgs[last];
  if (req.continue_final_message && (final_msg.role != Role::kAssistant || final_msg.prefix)) {
    fail("continue_final_message", fmt::format("requires the last message to be an assistant message without "
                                               "prefix, got {}{}", role_name(final_msg.role),
                                               final_msg.prefix ? " with prefix: true" : ""));
  }
  if (msgs.size() > 1 && final_msg.role == Role::kAssistant && !final_msg.prefix && !req.continue_final_message) {
    fail(msg_path(last), "the last message is an assistant message: set \"prefix\": true on it, or "
                         "continue_final_message, to continue it; otherwise end with a user or tool message");
  }
  for (size_t i = 0; i < last; ++i) {
    if (msgs[i].prefix) fail(msg_path(i) + ".prefix", "only the last message may have prefix: true");
  }
}

// §2.3: text anywhere; images in user and tool messages; thinking in assistant messages only (v15).
// parse_chat_request already refuses these while reading; this covers requests built in code.
void check_chunk_kinds(const Message& m, size_t i) {
  const auto* chunks = std::get_if<std::vector<Chunk>>(&m.content);
  if (chunks == nullptr) return;
  for (size_t j = 0; j < chunks->size(); ++j) {
    const Chunk& c = (*chunks)[j];
    const bool is_image = std::holds_alternative<ImageChunk>(c);
    const bool is_think = std::holds_alternative<ThinkChunk>(c);
    if ((is_image && m.role != Role::kUser && m.role != Role::kTool) || (is_think && m.role != Role::kAssistant)) {
      fail(fmt::format("{}.content[{}]", msg_path(i), j),
           fmt::format("{} chunks are not allowed in {} messages", is_image ? "image" : "thinking", role_name(m.role)));
    }
  }
}

void check_messages(const ChatRequest& req) {
  for (size_t i = 0; i < req.messages.size(); ++i) {
    const Message& m = req.messages[i];
    check_chunk_kinds(m, i);
    if (m.role != Role::kAssistant) continue;
    if (!has_content(m.content) && m.tool_calls.empty()) {
      fail(msg_path(i), "an assistant message needs non-empty content or at least one tool call");
    }
    for (size_t j = 0; j < m.tool_calls.size(); ++j) {
      const std::string path = fmt::format("{}.tool_calls[{}]", msg_path(i), j);
      check_function_name(m.tool_calls[j].name, path + ".function.name");
      if (m.tool_calls[j].id.empty() || m.tool_calls[j].id == "null") {
        fail(path + ".id", fmt::format("every tool call needs an id, got \"{}\"", m.tool_calls[j].id));
      }
    }
  }
}

// v13+ pairing: the results that follow an assistant message answer its calls, each exactly once, before the
// next assistant message.
void check_tool_pairing(const ChatRequest& req) {
  std::vector<std::string> expected;  // call ids of the latest assistant message
  std::set<std::string> answered;
  size_t latest_assistant = 0;
  const auto check_all_answered = [&](std::string_view where) {
    if (answered.size() == expected.size()) return;
    std::vector<std::string> missing;
    for (const std::string& id : expected) {
      if (!answered.contains(id)) missing.push_back(id);
    }
    fail(msg_path(latest_assistant) + ".tool_calls",
         fmt::format("{} of {} tool calls have no result before {} (missing ids: {})", missing.size(), expected.size(),
                     where, fmt::join(missing, ", ")));
  };
  for (size_t i = 0; i < req.messages.size(); ++i) {
    const Message& m = req.messages[i];
    if (m.role == Role::kTool) {
      const std::string path = msg_path(i) + ".tool_call_id";
      if (answered.contains(m.tool_call_id)) {
        fail(path, fmt::format("\"{}\" answers a tool call that already has a result", m.tool_call_id));
      }
      if (std::find(expected.begin(), expected.end(), m.tool_call_id) == expected.end()) {
        if (expected.empty()) {
          fail(path, fmt::format("\"{}\" answers no tool call: the preceding assistant message has no tool_calls",
                                 m.tool_call_id));
        }
        fail(path, fmt::format("\"{}\" matches no tool call of {} (ids: {})", m.tool_call_id,
                               msg_path(latest_assistant), fmt::join(expected, ", ")));
      }
      answered.insert(m.tool_call_id);
    } else if (m.role == Role::kAssistant) {
      check_all_answered(msg_path(i));
      expected.clear();
      answered.clear();
      latest_assistant = i;
      for (size_t j = 0; j < m.tool_calls.size(); ++j) {
        const std::string& id = m.tool_calls[j].id;
        if (std::find(expected.begin(), expected.end(), id) != expected.end()) {
          fail(fmt::format("{}.tool_calls[{}].id", msg_path(i), j),
               fmt::format("duplicate id \"{}\" within one assistant message", id));
        }
        expected.push_back(id);
      }
    }
  }
  // Calls without results are only possible on a final assistant message that is being continued.
  const bool is_continued_last = latest_assistant == req.messages.size() - 1 &&
                                 req.messages.back().role == Role::kAssistant &&
                                 (req.messages.back().prefix || req.continue_final_message);
  if (!is_continued_last) check_all_answered("the end of the conversation");
}

void check_tools(const ChatRequest& req) {
  for (size_t i = 0; i < req.tools.size(); ++i) {
    const std::string path = fmt::format("tools[{}].function", i);
    check_function_name(req.tools[i].name, path + ".name");
    check_json_schema_draft7(req.tools[i].parameters, path + ".parameters");
  }
}

}  // namespace

void validate_chat_request(const ChatRequest& request) {
  check_structure(request);
  check_messages(request);
  check_tool_pairing(request);
  check_tools(request);
}

}  // namespace quatre::tokenizer
