// Session: one generation request in the engine, seen from an HTTP thread. Submits to the EngineLoop, queues
// the engine's outputs, and turns them, choice by choice, into events: reasoning / content / tool-call text
// (chat, through StreamingOutputParser) or plain text (completions), stop strings applied with hold-back,
// logprob entries and finish reasons. Streaming and non-streaming responses are built from the same events,
// so their text is equal by construction. Cancels the request in the engine when every choice has stopped or
// the session is dropped (client gone). Depends on engine/engine_loop, tokenizer/output_parser, server/.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/engine_loop.h"
#include "server/metrics.h"
#include "server/stop_matcher.h"
#include "tokenizer/output_parser.h"
#include "tokenizer/tekken.h"

namespace quatre::server {

// What one choice produced since the previous poll.
struct ChoiceEvent {
  int32_t index = 0;
  std::string reasoning;
  std::string content;  // chat content, or completion text
  std::vector<tokenizer::OutputDelta> tool_deltas;  // kToolCallStart / kToolCallArguments
  std::vector<engine::RequestOutput> tokens;        // each sampled token, with its logprobs when asked
  std::optional<std::string> finish_reason;         // "stop", "length", "tool_calls", "abort", "error"
  std::string error;                                // finish "error": the engine's message
};

struct SessionOptions {
  bool is_chat = true;
  std::vector<std::string> stop;
  bool parallel_tool_calls = true;
  tokenizer::ToolCallIdGenerator tool_call_ids;
};

class Session {
 public:
  Session(const tokenizer::Tekken& tekken, engine::EngineLoop& loop, Metrics& metrics, const engine::Engine& engine,
          SessionOptions options);
  ~Session();  // cancels the request in the engine if it is still running
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Submits and waits for admission. Throws ApiError 400 when the engine refuses the request.
  void submit(engine::GenerateRequest request);
  // Waits up to `timeout` for outputs and returns the events they made (empty on timeout).
  std::vector<ChoiceEvent> poll(std::chrono::milliseconds timeout);
  bool is_done() const { return n_finished_ == n_; }
  int64_t n_prompt_tokens() const { return n_prompt_; }
  int64_t n_completion_tokens() const;
  int64_t n_reasoning_tokens() const;

 private:
  struct Inbox {
    std::mutex mutex;
    std::condition_variable ready;
    std::deque<engine::RequestOutput> outputs;
    int32_t n_engine_finished = 0;
  };
  struct Choice {
    std::unique_ptr<tokenizer::StreamingOutputParser> parser;  // chat
    std::unique_ptr<tokenizer::IncrementalDecoder> decoder;    // completions
    StopMatcher stop;
    int64_t n_tokens = 0, n_reasoning = 0;
    bool in_think = false;
    bool is_finished = false;
    std::chrono::steady_clock::time_point last_token;
  };
  void process(const engine::RequestOutput& out, ChoiceEvent& ev);
  void route(const std::vector<tokenizer::OutputDelta>& deltas, Choice& ch, ChoiceEvent& ev);
  void finish_choice(Choice& ch, ChoiceEvent& ev, std::string reason);

  const tokenizer::Tekken& tekken_;
  engine::EngineLoop& loop_;
  Metrics& metrics_;
  const engine::Engine& engine_;
  SessionOptions options_;
  tokenizer::OutputTokens special_;
  std::shared_ptr<Inbox> inbox_ = std::make_shared<Inbox>();
  std::vector<Choice> choices_;
  int64_t id_ = -1;
  int32_t n_ = 0;
  int32_t n_finished_ = 0;
  int64_t n_prompt_ = 0;
  bool is_engine_done_ = false;
  std::chrono::steady_clock::time_point submitted_;
};

}  // namespace quatre::server
