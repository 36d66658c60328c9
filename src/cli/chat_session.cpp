// ChatSession: slash commands, the request of the next reply, save and load. MultilineReader. Wiring only.
#include "cli/chat_session.h"

#include <cctype>
#include <fstream>
#include <optional>
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

// A user turn: its images, then its text.
tokenizer::Message user_message(const ChatTurn& t) {
  if (t.images.empty()) return message(tokenizer::Role::kUser, t.content);
  std::vector<tokenizer::Chunk> chunks;
  for (const std::string& path : t.images) chunks.push_back(tokenizer::ImageChunk{.source = path, .size = std::nullopt});
  chunks.push_back(tokenizer::TextChunk{.text = t.content});
  tokenizer::Message m;
  m.role = tokenizer::Role::kUser;
  m.content = std::move(chunks);
  return m;
}

// file:// URLs of absolute paths, bytes other than unreserved ones and '/' percent-encoded (RFC 8089, 3986).
std::string file_url(const std::string& path) {
  std::string url = "file://";
  for (const char c : path) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) != 0 || c == '/' || c == '-' || c == '.' || c == '_' || c == '~') {
      url += c;
    } else {
      url += fmt::format("%{:02X}", u);
    }
  }
  return url;
}

// The path of a file:// URL (or a plain path); nullopt for a bad percent escape.
std::optional<std::string> path_of_url(std::string_view url) {
  if (!url.starts_with("file://")) return std::string(url);
  url.remove_prefix(7);
  std::string path;
  for (size_t i = 0; i < url.size(); ++i) {
    if (url[i] != '%') {
      path += url[i];
      continue;
    }
    if (i + 2 >= url.size() || std::isxdigit(static_cast<unsigned char>(url[i + 1])) == 0 ||
        std::isxdigit(static_cast<unsigned char>(url[i + 2])) == 0) {
      return std::nullopt;
    }
    path += static_cast<char>(std::stoi(std::string(url.substr(i + 1, 2)), nullptr, 16));
    i += 2;
  }
  return path;
}

}  // namespace

const char* ChatSession::help_text() {
  return "commands:\n"
         "  /reasoning none|high   reasoning effort of the next replies\n"
         "  /thoughts show|hide    show the reasoning of replies, or collapse it to one line\n"
         "  /system TEXT           set the system prompt (/system alone clears it)\n"
         "  /reset                 forget the conversation (keeps the system prompt and settings)\n"
         "  /save FILE, /load FILE the conversation as OpenAI-style JSON\n"
         "  /image PATH            attach an image to the next message (repeat for several; needs a vision model)\n"
         "  /help, /quit           this text; leave (also Ctrl-D)\n"
         "input: end a line with \\ to continue it, or wrap several lines in \"\"\" ... \"\"\".\n"
         "Ctrl-C stops the reply being written.";
}

ChatAction ChatSession::handle(std::string_view input) {
  const std::string_view line = trim(input);
  if (line.empty()) return {};
  if (line.front() != '/') {
    turns_.push_back({.role = tokenizer::Role::kUser, .content = std::string(input), .reasoning = {}, .images = std::move(pending_images_)});
    pending_images_.clear();
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
    pending_images_.clear();
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
  if (command == "/image") return attach_image(arg);
  throw InvalidRequest(fmt::format("unknown command {} (/help lists them)", command));
}

ChatAction ChatSession::attach_image(std::string_view arg) {
  if (arg.empty()) throw InvalidRequest("/image: expected the path of an image file");
  if (!image_check_) throw InvalidRequest("/image: this model has no vision tower: it does not take images");
  const std::string path = std::filesystem::absolute(std::string(arg)).lexically_normal().string();
  std::string description;
  try {
    description = image_check_(path);
  } catch (const InvalidRequest& e) {
    const std::string_view m = e.what();
    throw InvalidRequest(m.starts_with("/image") ? std::string(m) : fmt::format("/image: {}", m));
  }
  pending_images_.push_back(path);
  return {.kind = ChatAction::Kind::kNone,
          .message = fmt::format("attached {} ({}); {} image{} will go with your next message", path, description, pending_images_.size(),
                                 pending_images_.size() == 1 ? "" : "s")};
}

tokenizer::ChatRequest ChatSession::request() const {
  tokenizer::ChatRequest r;
  if (!system_.empty()) r.messages.push_back(message(tokenizer::Role::kSystem, system_));
  for (const ChatTurn& t : turns_) r.messages.push_back(t.role == tokenizer::Role::kUser ? user_message(t) : message(t.role, t.content));
  if (!reasoning_effort_.empty()) r.reasoning_effort = reasoning_effort_;
  return r;
}

void ChatSession::add_reply(std::string content, std::string reasoning) {
  turns_.push_back({.role = tokenizer::Role::kAssistant, .content = std::move(content), .reasoning = std::move(reasoning), .images = {}});
}

void ChatSession::drop_unanswered_turn() {
  if (!turns_.empty() && turns_.back().role == tokenizer::Role::kUser) turns_.pop_back();
}

void ChatSession::save(const std::filesystem::path& file) const {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  if (!system_.empty()) messages.push_back({{"role", "system"}, {"content", system_}});
  for (const ChatTurn& t : turns_) {
    nlohmann::ordered_json m = {{"role", tokenizer::role_name(t.role)}, {"content", t.content}};
    if (!t.images.empty()) {
      nlohmann::ordered_json parts = nlohmann::ordered_json::array();
      for (const std::string& path : t.images) parts.push_back({{"type", "image_url"}, {"image_url", {{"url", file_url(path)}}}});
      parts.push_back({{"type", "text"}, {"text", t.content}});
      m["content"] = std::move(parts);
    }
    if (!t.reasoning.empty()) m["reasoning_content"] = t.reasoning;
    messages.push_back(std::move(m));
  }
  nlohmann::ordered_json doc = {{"messages", std::move(messages)}};
  if (!reasoning_effort_.empty()) doc["reasoning_effort"] = reasoning_effort_;
  std::ofstream out(file);
  out << doc.dump(2) << "\n";
  if (!out) throw InvalidRequest(fmt::format("/save: cannot write {}", file.string()));
}

namespace {

// A user message's content parts: text parts joined, image_url parts ({"url"} or a string) as paths.
template <typename Fail>
void read_parts(const nlohmann::json& parts, const std::string& where, std::string& text, std::vector<std::string>& images, const Fail& fail) {
  for (size_t j = 0; j < parts.size(); ++j) {
    const nlohmann::json& p = parts[j];
    const std::string at = fmt::format("{}[{}]", where, j);
    if (!p.is_object() || !p.contains("type") || !p["type"].is_string()) throw fail(at + ".type must be a string");
    if (p["type"] == "text" && p.contains("text") && p["text"].is_string()) {
      text += p["text"].get<std::string>();
      continue;
    }
    if (p["type"] != "image_url" || !p.contains("image_url")) throw fail(at + ": expected a text or an image_url part");
    const nlohmann::json& u = p["image_url"].is_object() && p["image_url"].contains("url") ? p["image_url"]["url"] : p["image_url"];
    const std::optional<std::string> path = u.is_string() ? path_of_url(u.get<std::string>()) : std::nullopt;
    if (!path || path->empty()) throw fail(at + ".image_url must be a file:// URL or a path");
    images.push_back(*path);
  }
}

}  // namespace

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
    const std::string role = m["role"].get<std::string>();
    std::string content;
    std::vector<std::string> images;
    if (m.contains("content") && m["content"].is_array() && role == "user") {
      read_parts(m["content"], where + ".content", content, images, fail);
    } else if (m.contains("content") && m["content"].is_string()) {
      content = m["content"].get<std::string>();
    } else {
      throw fail(where + ".content must be a string (or, for a user message, an array of text and image_url parts)");
    }
    if (role == "system" && i == 0) {
      system = content;
    } else if (role == "user" || role == "assistant") {
      const tokenizer::Role r = role == "user" ? tokenizer::Role::kUser : tokenizer::Role::kAssistant;
      std::string reasoning;
      if (m.contains("reasoning_content") && m["reasoning_content"].is_string()) reasoning = m["reasoning_content"].get<std::string>();
      turns.push_back({.role = r, .content = content, .reasoning = std::move(reasoning), .images = std::move(images)});
    } else {
      throw fail(fmt::format("{}.role: expected user or assistant (system only first), got \"{}\"", where, role));
    }
  }
  for (size_t i = 0; i < turns.size(); ++i) {  // the images must still be there, and the model must take them
    for (const std::string& path : turns[i].images) {
      if (!image_check_) throw fail(fmt::format("{}: has images, and this model has no vision tower", path));
      try {
        image_check_(path);
      } catch (const InvalidRequest& e) {
        throw fail(e.what());
      }
    }
  }
  system_ = std::move(system);
  reasoning_effort_ = std::move(effort);
  turns_ = std::move(turns);
  pending_images_.clear();
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
