// ChatSession: slash commands, the request of the next reply, save and load. MultilineReader. Wiring only.
#include "cli/chat_session.h"

#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace quatre::cli {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

tokenizer::Message message(tokenizer::Role role, const std::string& content) {
  tokenizer::Message m;
  m.role = role;
  m.content = content;
  return m;
}

}  // namespace

const char* ChatSession::help_text() {
  return "commands:\n"
         "  /reasoning none|high   reasoning effort of the next replies\n"
         "  /thoughts show|hide    show the reasoning of replies, or collapse it to one line\n"
         "  /system TEXT           set the system prompt (/system alone clears it)\n"
         "  /reset                 forget the conversation (keeps the system prompt and settings)\n"
         "  /save FILE, /load FILE the conversation as OpenAI-style JSON\n"
         "  /image PATH            attach an image to the next message (needs a vision model)\n"
         "  /help, /quit           this text; leave (also Ctrl-D)\n"
         "input: end a line with \\ to continue it, or wrap several lines in \"\"\" ... \"\"\".\n"
         "Ctrl-C stops the reply being written.";
}

ChatAction ChatSession::handle(std::string_view input) {
  const std::string_view line = trim(input);
  if (line.empty()) return {};
  if (line.front() != '/') {
    turns_.push_back({.role = tokenizer::Role::kUser, .content = std::string(input), .reasoning = {}});
    return {.kind = ChatAction::Kind::kGenerate, .message = {}};
  }
  const size_t space = line.find(' ');
  const std::string_view command = line.substr(0, space);
  const std::string_view arg = space == std::string_view::npos ? std::string_view() : trim(line.substr(space + 1));
  if (command == "/help") return {.kind = ChatAction::Kind::kNone, .message = help_text()};
  if (command == "/quit" || command == "/exit") return {.kind = ChatAction::Kind::kQuit, .message = {}};
  if (command == "/reasoning") {
    if (arg != "none" && arg != "high") throw InvalidRequest(fmt::format("/reasoning: expected none or high, got '{}'", arg));
    reasoning_effort_ = std::string(arg);
    return {.kind = ChatAction::Kind::kNone, .message = fmt::format("reasoning effort: {}", arg)};
  }
  if (command == "/thoughts") {
    if (arg != "show" && arg != "hide") throw InvalidRequest(fmt::format("/thoughts: expected show or hide, got '{}'", arg));
    show_reasoning_ = arg == "show";
    return {.kind = ChatAction::Kind::kNone, .message = show_reasoning_ ? "reasoning shown" : "reasoning collapsed"};
  }
  if (command == "/system") {
    system_ = std::string(arg);
    return {.kind = ChatAction::Kind::kNone, .message = system_.empty() ? "system prompt cleared" : "system prompt set"};
  }
  if (command == "/reset") {
    turns_.clear();
    return {.kind = ChatAction::Kind::kNone, .message = "conversation cleared"};
  }
  if (command == "/save" || command == "/load") {
    if (arg.empty()) throw InvalidRequest(fmt::format("{}: expected a file name", command));
    if (command == "/save") {
      save(std::string(arg));
      return {.kind = ChatAction::Kind::kNone, .message = fmt::format("saved {} messages to {}", turns_.size(), arg)};
    }
    load(std::string(arg));
    return {.kind = ChatAction::Kind::kNone, .message = fmt::format("loaded {} messages from {}", turns_.size(), arg)};
  }
  if (command == "/image") {
    throw InvalidRequest("/image: this build's chat does not read images yet (the vision encoder is issue #5)");
  }
  throw InvalidRequest(fmt::format("unknown command {} (/help lists them)", command));
}

tokenizer::ChatRequest ChatSession::request() const {
  tokenizer::ChatRequest r;
  if (!system_.empty()) r.messages.push_back(message(tokenizer::Role::kSystem, system_));
  for (const ChatTurn& t : turns_) r.messages.push_back(message(t.role, t.content));
  if (!reasoning_effort_.empty()) r.reasoning_effort = reasoning_effort_;
  return r;
}

void ChatSession::add_reply(std::string content, std::string reasoning) {
  turns_.push_back({.role = tokenizer::Role::kAssistant, .content = std::move(content), .reasoning = std::move(reasoning)});
}

void ChatSession::drop_unanswered_turn() {
  if (!turns_.empty() && turns_.back().role == tokenizer::Role::kUser) turns_.pop_back();
}

void ChatSession::save(const std::filesystem::path& file) const {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  if (!system_.empty()) messages.push_back({{"role", "system"}, {"content", system_}});
  for (const ChatTurn& t : turns_) {
    nlohmann::ordered_json m = {{"role", tokenizer::role_name(t.role)}, {"content", t.content}};
    if (!t.reasoning.empty()) m["reasoning_content"] = t.reasoning;
    messages.push_back(std::move(m));
  }
  nlohmann::ordered_json doc = {{"messages", std::move(messages)}};
  if (!reasoning_effort_.empty()) doc["reasoning_effort"] = reasoning_effort_;
  std::ofstream out(file);
  out << doc.dump(2) << "\n";
  if (!out) throw InvalidRequest(fmt::format("/save: cannot write {}", file.string()));
}

void ChatSession::load(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw InvalidRequest(fmt::format("/load: cannot read {}", file.string()));
  std::stringstream text;
  text << in.rdbuf();
  const nlohmann::json doc = nlohmann::json::parse(text.str(), nullptr, false);
  auto fail = [&](const std::string& what) { return InvalidRequest(fmt::format("/load: {}: {}", file.string(), what)); };
  if (doc.is_discarded() || !doc.is_object()) throw fail("not a JSON object");
  if (!doc.contains("messages") || !doc["messages"].is_array()) throw fail("\"messages\" must be an array");
  std::string system, effort;
  std::vector<ChatTurn> turns;
  if (doc.contains("reasoning_effort")) {
    const auto& e = doc["reasoning_effort"];
    if (!e.is_string() || (e != "none" && e != "high")) throw fail("\"reasoning_effort\" must be \"none\" or \"high\"");
    effort = e.get<std::string>();
  }
  for (size_t i = 0; i < doc["messages"].size(); ++i) {
    const auto& m = doc["messages"][i];
    const std::string where = fmt::format("messages[{}]", i);
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) throw fail(where + ".role must be a string");
    if (!m.contains("content") || !m["content"].is_string()) throw fail(where + ".content must be a string");
    const std::string role = m["role"].get<std::string>();
    const std::string content = m["content"].get<std::string>();
    if (role == "system" && i == 0) {
      system = content;
    } else if (role == "user" || role == "assistant") {
      const tokenizer::Role r = role == "user" ? tokenizer::Role::kUser : tokenizer::Role::kAssistant;
      std::string reasoning;
      if (m.contains("reasoning_content") && m["reasoning_content"].is_string()) reasoning = m["reasoning_content"].get<std::string>();
      turns.push_back({.role = r, .content = content, .reasoning = std::move(reasoning)});
    } else {
      throw fail(fmt::format("{}.role: expected user or assistant (system only first), got \"{}\"", where, role));
    }
  }
  system_ = std::move(system);
  reasoning_effort_ = std::move(effort);
  turns_ = std::move(turns);
}

void MultilineReader::feed(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line == "\"\"\"") {
    in_block_ = !in_block_;
    if (!in_block_) has_text_ = true;  // an empty block is still a (blank) message: skipped by the session
    return;
  }
  if (!text_.empty() || (in_block_ && has_text_)) text_ += '\n';
  if (!in_block_ && !line.empty() && line.back() == '\\') {
    text_.append(line.substr(0, line.size() - 1));
    continued_ = true;
    has_text_ = true;
    return;
  }
  text_.append(line);
  continued_ = false;
  has_text_ = true;
}

std::string MultilineReader::take() {
  std::string out = std::move(text_);
  text_.clear();
  in_block_ = continued_ = has_text_ = false;
  return out;
}

}  // namespace quatre::cli
