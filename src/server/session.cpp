// Session: engine outputs -> choice events.
#include "server/session.h"

#include <fmt/format.h>

#include "core/error.h"
#include "server/api_error.h"

namespace quatre::server {

using Clock = std::chrono::steady_clock;

Session::Session(const tokenizer::Tekken& tekken, engine::EngineLoop& loop, Metrics& metrics, const engine::Engine& engine,
                 SessionOptions options)
    : tekken_(tekken), loop_(loop), metrics_(metrics), engine_(engine), options_(std::move(options)),
      special_(tokenizer::OutputTokens::of(tekken)) {}

Session::~Session() {
  if (id_ >= 0 && !is_engine_done_) loop_.cancel(id_);
}

void Session::submit(engine::GenerateRequest request) {
  n_ = request.n;
  n_prompt_ = static_cast<int64_t>(request.prompt.size());
  for (int32_t i = 0; i < n_; ++i) {
    Choice& ch = choices_.emplace_back(Choice{nullptr, nullptr, StopMatcher(options_.stop), 0, 0, false, false, {}});
    if (options_.is_chat) {
      ch.parser = std::make_unique<tokenizer::StreamingOutputParser>(tekken_, options_.tool_call_ids);
    } else {
      ch.decoder = std::make_unique<tokenizer::IncrementalDecoder>(tekken_);
    }
  }
  std::shared_ptr<Inbox> inbox = inbox_;
  Metrics* metrics = &metrics_;
  const engine::Engine* eng = &engine_;
  submitted_ = Clock::now();
  std::future<int64_t> id = loop_.submit(std::move(request), [inbox, metrics, eng](const engine::RequestOutput& out) {
    metrics->sample_engine(*eng);  // on the engine thread, where reading the engine is safe
    std::lock_guard lock(inbox->mutex);
    inbox->outputs.push_back(out);
    if (out.finish) ++inbox->n_engine_finished;
    inbox->ready.notify_all();
  });
  try {
    id_ = id.get();
  } catch (const InvalidRequest& e) {
    throw from_invalid_request(e);
  }
  metrics_.add_tokens(n_prompt_, 0);
}

std::vector<ChoiceEvent> Session::poll(std::chrono::milliseconds timeout) {
  std::deque<engine::RequestOutput> outputs;
  {
    std::unique_lock lock(inbox_->mutex);
    inbox_->ready.wait_for(lock, timeout, [&] { return !inbox_->outputs.empty(); });
    outputs.swap(inbox_->outputs);
    is_engine_done_ = inbox_->n_engine_finished >= n_;
  }
  std::vector<ChoiceEvent> events;
  for (const engine::RequestOutput& out : outputs) {
    if (out.choice < 0 || out.choice >= n_) continue;
    if (events.empty() || events.back().index != out.choice) {
      events.emplace_back();
      events.back().index = out.choice;
    }
    process(out, events.back());
  }
  if (is_done() && !is_engine_done_ && id_ >= 0) loop_.cancel(id_);  // every choice stopped on a stop string
  return events;
}

void Session::process(const engine::RequestOutput& out, ChoiceEvent& ev) {
  Choice& ch = choices_[static_cast<size_t>(out.choice)];
  if (ch.is_finished) return;
  if (out.token) {
    const tokenizer::TokenId t = *out.token;
    const Clock::time_point now = Clock::now();
    if (ch.n_tokens == 0) metrics_.observe_ttft(std::chrono::duration<double>(now - submitted_).count());
    else metrics_.observe_inter_token(std::chrono::duration<double>(now - ch.last_token).count());
    ch.last_token = now;
    ++ch.n_tokens;
    metrics_.add_tokens(0, 1);
    if (t == special_.think) ch.in_think = true;
    if (ch.in_think) ++ch.n_reasoning;
    if (t == special_.end_think) ch.in_think = false;
    ev.tokens.push_back(out);
    if (ch.parser) {
      route(ch.parser->push(t), ch, ev);
    } else if (tekken_.is_special(t)) {
      route({tokenizer::OutputDelta::content(ch.decoder->flush())}, ch, ev);
    } else {
      route({tokenizer::OutputDelta::content(ch.decoder->push(t))}, ch, ev);
    }
    if (ch.is_finished) return;  // a stop string matched
  }
  if (!out.finish) return;
  route(ch.parser ? ch.parser->finish() : std::vector{tokenizer::OutputDelta::content(ch.decoder->flush())}, ch, ev);
  if (ch.is_finished) return;
  ev.content += ch.stop.finish();
  switch (*out.finish) {
    case engine::FinishReason::kStop:
      finish_choice(ch, ev, ch.parser && ch.parser->n_tool_calls() > 0 ? "tool_calls" : "stop");
      break;
    case engine::FinishReason::kLength: finish_choice(ch, ev, "length"); break;
    case engine::FinishReason::kCancelled: finish_choice(ch, ev, "abort"); break;
    case engine::FinishReason::kError:
      ev.error = out.error.empty() ? "generation failed" : out.error;
      finish_choice(ch, ev, "error");
      break;
  }
}

void Session::route(const std::vector<tokenizer::OutputDelta>& deltas, Choice& ch, ChoiceEvent& ev) {
  using Kind = tokenizer::OutputDelta::Kind;
  for (const tokenizer::OutputDelta& d : deltas) {
    if (ch.is_finished) return;
    switch (d.kind) {
      case Kind::kReasoning: ev.reasoning += d.text; break;
      case Kind::kContent:
        ev.content += ch.stop.push(d.text);
        if (ch.stop.matched()) finish_choice(ch, ev, "stop");
        break;
      case Kind::kToolCallStart:
      case Kind::kToolCallArguments:
        if (options_.parallel_tool_calls || d.tool_index == 0) ev.tool_deltas.push_back(d);
        break;
    }
  }
}

void Session::finish_choice(Choice& ch, ChoiceEvent& ev, std::string reason) {
  ch.is_finished = true;
  ev.finish_reason = std::move(reason);
  ++n_finished_;
}

int64_t Session::n_completion_tokens() const {
  int64_t n = 0;
  for (const Choice& ch : choices_) n += ch.n_tokens;
  return n;
}

int64_t Session::n_reasoning_tokens() const {
  int64_t n = 0;
  for (const Choice& ch : choices_) n += ch.n_reasoning;
  return n;
}

}  // namespace quatre::server
