// The JSON of chat and text completion responses (PROTOCOL §4.3, §4.5, §4.6, §4.8), built from Session events:
// whole responses by accumulating every event, streaming chunks one event at a time. Depends on server/session.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/session.h"
#include "tokenizer/tekken.h"

namespace quatre::server {

struct ResponseIds {
  std::string id;     // "chatcmpl-..." or "cmpl-..."
  int64_t created = 0;  // Unix seconds
  std::string model;
};

// "prefix" + 24 random alphanumerics.
std::string random_id(const std::string& prefix);

// OpenAI chat logprob entries ({"token","logprob","bytes","top_logprobs"}) of the tokens of an event.
nlohmann::json chat_logprob_entries(const std::vector<engine::RequestOutput>& tokens, const tokenizer::Tekken& tekken);

nlohmann::json usage_json(const Session& session);

// Non-streaming chat: accumulates events per choice, then writes the chat.completion object.
class ChatAccumulator {
 public:
  ChatAccumulator(int32_t n, bool logprobs, bool include_reasoning);
  void add(const ChoiceEvent& ev, const tokenizer::Tekken& tekken);
  nlohmann::json response(const ResponseIds& ids, const Session& session) const;
  std::string first_error() const;

 private:
  struct Call {
    std::string id, name, arguments;
  };
  struct Choice {
    std::string reasoning, content, error;
    std::vector<Call> calls;
    nlohmann::json logprobs = nlohmann::json::array();
    std::string finish_reason = "abort";
  };
  std::vector<Choice> choices_;
  bool logprobs_, include_reasoning_;
};

// Streaming chat chunks.
class ChatStreamer {
 public:
  ChatStreamer(ResponseIds ids, int32_t n, bool logprobs, bool include_reasoning, bool include_usage);
  // The first chunk of each choice: role "assistant", content "".
  std::string role_chunks() const;
  // The chunks of one event ("" when it carries nothing to send yet); an error is sent as an error event.
  std::string event_chunks(const ChoiceEvent& ev, const tokenizer::Tekken& tekken);
  // The usage chunk (when asked) and [DONE].
  std::string end(const Session& session) const;

 private:
  nlohmann::json chunk(nlohmann::json choices) const;
  ResponseIds ids_;
  int32_t n_;
  bool logprobs_, include_reasoning_, include_usage_;
  std::vector<nlohmann::json> pending_logprobs_;  // per choice: entries not yet sent with a delta
};

// Text completions (legacy logprobs format {"tokens","token_logprobs","top_logprobs","text_offset"}).
class CompletionAccumulator {
 public:
  CompletionAccumulator(int32_t n, bool logprobs, std::string echo_text);
  // Returns the choice's legacy logprobs for this event's tokens (null when not asked); accumulates text.
  nlohmann::json add(const ChoiceEvent& ev, const tokenizer::Tekken& tekken);
  nlohmann::json response(const ResponseIds& ids, const Session& session) const;
  nlohmann::json chunk(const ResponseIds& ids, const ChoiceEvent& ev, nlohmann::json logprobs) const;

 private:
  struct Choice {
    std::string text;
    nlohmann::json logprobs;
    std::string finish_reason = "abort";
    size_t offset = 0;  // text bytes so far (text_offset)
  };
  std::vector<Choice> choices_;
  bool logprobs_;
};

}  // namespace quatre::server
