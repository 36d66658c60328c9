// ChatSession: the state of a terminal chat (system prompt, reasoning effort, the conversation) and its slash
// commands, apart from the terminal and the model so that both can be tested alone. Wiring only.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/chat_request.h"

namespace quatre::cli {

struct ChatTurn {
  tokenizer::Role role = tokenizer::Role::kUser;
  std::string content;
  std::string reasoning;            // assistant only; shown, saved, never sent back to the model
  std::vector<std::string> images;  // user only: absolute paths of the attached images, laid out before the text
};

// Checks an image file before /image attaches it (quatre chat decodes and encodes it) and describes it in a few
// words; throws InvalidRequest to refuse it.
using ImageCheck = std::function<std::string(const std::string& path)>;

// What the loop should do after a line of input.
struct ChatAction {
  enum class Kind { kNone, kGenerate, kQuit };
  Kind kind = Kind::kNone;
  std::string message;  // text to print (command feedback or an error), may be empty
};

class ChatSession {
 public:
  // A slash command (/help ...) or a user message (which asks for a reply; it takes the images attached since the
  // previous one). InvalidRequest for a bad command, or an image refused by the check (or /image without one).
  ChatAction handle(std::string_view input);
  // Set when the model takes images; unset, /image answers that it does not and /load refuses images.
  void set_image_check(ImageCheck check) { image_check_ = std::move(check); }
  // The request for the next reply: the system prompt, then every turn (assistant turns without reasoning).
  tokenizer::ChatRequest request() const;
  void add_reply(std::string content, std::string reasoning);
  // Drops the last user turn when its reply failed, so the conversation stays well-formed.
  void drop_unanswered_turn();

  bool show_reasoning() const { return show_reasoning_; }
  const std::vector<ChatTurn>& turns() const { return turns_; }
  const std::string& system() const { return system_; }
  const std::string& reasoning_effort() const { return reasoning_effort_; }
  const std::vector<std::string>& pending_images() const { return pending_images_; }

  // JSON in the OpenAI form: {"reasoning_effort": ..., "messages": [{"role", "content", "reasoning_content"?}]}; a
  // user message with images has content parts: {"type": "image_url", "image_url": {"url": "file:///..."}} each,
  // then {"type": "text", ...}.
  void save(const std::filesystem::path& file) const;
  // Replaces the conversation (images checked again); InvalidRequest naming the file and the field.
  void load(const std::filesystem::path& file);

  static const char* help_text();

 private:
  std::string system_;
  std::string reasoning_effort_;  // "" = the tokenizer's default
  bool show_reasoning_ = true;
  ChatAction attach_image(std::string_view arg);  // /image PATH

  std::vector<ChatTurn> turns_;
  std::vector<std::string> pending_images_;  // attached to the next user message
  ImageCheck image_check_;
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
