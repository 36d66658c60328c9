// ChatSession: the state of a terminal chat (system prompt, reasoning effort, the conversation) and its slash
// commands, apart from the terminal and the model so that both can be tested alone. Wiring only.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/chat_request.h"

namespace quatre::cli {

struct ChatTurn {
  tokenizer::Role role = tokenizer::Role::kUser;
  std::string content;
  std::string reasoning;  // assistant only; shown, saved, never sent back to the model
};

// What the loop should do after a line of input.
struct ChatAction {
  enum class Kind { kNone, kGenerate, kQuit };
  Kind kind = Kind::kNone;
  std::string message;  // text to print (command feedback or an error), may be empty
};

class ChatSession {
 public:
  // A slash command (/help ...) or a user message (which asks for a reply). InvalidRequest for a bad command.
  ChatAction handle(std::string_view input);
  // The request for the next reply: the system prompt, then every turn (assistant turns without reasoning).
  tokenizer::ChatRequest request() const;
  void add_reply(std::string content, std::string reasoning);
  // Drops the last user turn when its reply failed, so the conversation stays well-formed.
  void drop_unanswered_turn();

  bool show_reasoning() const { return show_reasoning_; }
  const std::vector<ChatTurn>& turns() const { return turns_; }
  const std::string& system() const { return system_; }
  const std::string& reasoning_effort() const { return reasoning_effort_; }

  // JSON in the OpenAI form: {"reasoning_effort": ..., "messages": [{"role", "content", "reasoning_content"?}]}.
  void save(const std::filesystem::path& file) const;
  void load(const std::filesystem::path& file);  // replaces the conversation; LoadError naming file and field

  static const char* help_text();

 private:
  std::string system_;
  std::string reasoning_effort_;  // "" = the tokenizer's default
  bool show_reasoning_ = true;
  std::vector<ChatTurn> turns_;
};

// Multi-line input: a line ending in a backslash continues on the next one, and a line that is exactly """
// opens a block that runs until the next such line. Feed lines; complete() says when a message is whole.
class MultilineReader {
 public:
  void feed(std::string_view line);
  bool complete() const { return !in_block_ && !continued_ && has_text_; }
  std::string take();  // the whole message, and resets
  bool pending() const { return in_block_ || continued_; }

 private:
  std::string text_;
  bool in_block_ = false;
  bool continued_ = false;
  bool has_text_ = false;
};

}  // namespace quatre::cli
