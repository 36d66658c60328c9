// Response JSON builders.
#include "server/responses.h"

#include <random>

#include "server/sse.h"

namespace quatre::server {

using nlohmann::json;

std::string random_id(const std::string& prefix) {
  static constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  thread_local std::mt19937_64 rng(std::random_device{}());
  std::string out = prefix;
  for (int i = 0; i < 24; ++i) out += kAlphabet[rng() % kAlphabet.size()];
  return out;
}

namespace {

json token_json(tokenizer::TokenId id, float logprob, const tokenizer::Tekken& tekken) {
  const std::string_view raw = tekken.token_bytes(id);
  json bytes = json::array();
  for (char c : raw) bytes.push_back(static_cast<unsigned char>(c));
  return {{"token", tekken.id_to_piece(id)}, {"logprob", logprob}, {"bytes", bytes}};
}

}  // namespace

json chat_logprob_entries(const std::vector<engine::RequestOutput>& tokens, const tokenizer::Tekken& tekken) {
  json entries = json::array();
  for (const engine::RequestOutput& t : tokens) {
    if (!t.token) continue;
    json e = token_json(*t.token, t.logprob.value_or(0.0f), tekken);
    json top = json::array();
    for (const engine::TokenLogprob& alt : t.top_logprobs) top.push_back(token_json(alt.token, alt.logprob, tekken));
    e["top_logprobs"] = top;
    entries.push_back(e);
  }
  return entries;
}

json usage_json(const Session& session) {
  const int64_t p = session.n_prompt_tokens(), c = session.n_completion_tokens();
  return {{"prompt_tokens", p},
          {"completion_tokens", c},
          {"total_tokens", p + c},
          {"completion_tokens_details", {{"reasoning_tokens", session.n_reasoning_tokens()}}}};
}

ChatAccumulator::ChatAccumulator(int32_t n, bool logprobs, bool include_reasoning)
    : choices_(static_cast<size_t>(n)), logprobs_(logprobs), include_reasoning_(include_reasoning) {}

void ChatAccumulator::add(const ChoiceEvent& ev, const tokenizer::Tekken& tekken) {
  Choice& ch = choices_.at(static_cast<size_t>(ev.index));
  ch.reasoning += ev.reasoning;
  ch.content += ev.content;
  for (const tokenizer::OutputDelta& d : ev.tool_deltas) {
    if (d.kind == tokenizer::OutputDelta::Kind::kToolCallStart) ch.calls.push_back({d.tool_call_id, d.name, ""});
    else if (!ch.calls.empty()) ch.calls.back().arguments += d.text;
  }
  if (logprobs_) {
    for (json& e : chat_logprob_entries(ev.tokens, tekken)) ch.logprobs.push_back(std::move(e));
  }
  if (ev.finish_reason) ch.finish_reason = *ev.finish_reason;
  if (!ev.error.empty()) ch.error = ev.error;
}

std::string ChatAccumulator::first_error() const {
  for (const Choice& ch : choices_) {
    if (!ch.error.empty()) return ch.error;
  }
  return {};
}

json ChatAccumulator::response(const ResponseIds& ids, const Session& session) const {
  json choices = json::array();
  for (size_t i = 0; i < choices_.size(); ++i) {
    const Choice& ch = choices_[i];
    json message = {{"role", "assistant"}, {"content", ch.content.empty() && !ch.calls.empty() ? json(nullptr) : json(ch.content)}};
    if (include_reasoning_ && !ch.reasoning.empty()) {
      message["reasoning_content"] = ch.reasoning;
      message["reasoning"] = ch.reasoning;
    }
    if (!ch.calls.empty()) {
      json calls = json::array();
      for (const Call& c : ch.calls) {
        calls.push_back({{"id", c.id}, {"type", "function"}, {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
      }
      message["tool_calls"] = calls;
    }
    choices.push_back({{"index", i},
                       {"message", message},
                       {"logprobs", logprobs_ ? json{{"content", ch.logprobs}} : json(nullptr)},
                       {"finish_reason", ch.finish_reason}});
  }
  return {{"id", ids.id}, {"object", "chat.completion"}, {"created", ids.created}, {"model", ids.model},
          {"choices", choices}, {"usage", usage_json(session)}};
}

ChatStreamer::ChatStreamer(ResponseIds ids, int32_t n, bool logprobs, bool include_reasoning, bool include_usage)
    : ids_(std::move(ids)), n_(n), logprobs_(logprobs), include_reasoning_(include_reasoning), include_usage_(include_usage),
      pending_logprobs_(static_cast<size_t>(n), json::array()) {}

json ChatStreamer::chunk(json choices) const {
  json c = {{"id", ids_.id}, {"object", "chat.completion.chunk"}, {"created", ids_.created}, {"model", ids_.model},
            {"choices", std::move(choices)}};
  if (include_usage_) c["usage"] = nullptr;
  return c;
}

std::string ChatStreamer::role_chunks() const {
  std::string out;
  for (int32_t i = 0; i < n_; ++i) {
    out += sse_event(chunk(json::array({{{"index", i}, {"delta", {{"role", "assistant"}, {"content", ""}}},
                                         {"logprobs", nullptr}, {"finish_reason", nullptr}}})));
  }
  return out;
}

std::string ChatStreamer::event_chunks(const ChoiceEvent& ev, const tokenizer::Tekken& tekken) {
  json& pending = pending_logprobs_.at(static_cast<size_t>(ev.index));
  if (logprobs_) {
    for (json& e : chat_logprob_entries(ev.tokens, tekken)) pending.push_back(std::move(e));
  }
  json delta = json::object();
  if (include_reasoning_ && !ev.reasoning.empty()) {
    delta["reasoning_content"] = ev.reasoning;
    delta["reasoning"] = ev.reasoning;
  }
  if (!ev.content.empty()) delta["content"] = ev.content;
  json calls = json::array();
  for (const tokenizer::OutputDelta& d : ev.tool_deltas) {
    if (d.kind == tokenizer::OutputDelta::Kind::kToolCallStart) {
      calls.push_back({{"index", d.tool_index}, {"id", d.tool_call_id}, {"type", "function"},
                       {"function", {{"name", d.name}, {"arguments", ""}}}});
    } else if (!calls.empty() && calls.back()["index"] == d.tool_index) {
      calls.back()["function"]["arguments"] = calls.back()["function"]["arguments"].get<std::string>() + d.text;
    } else {
      calls.push_back({{"index", d.tool_index}, {"function", {{"arguments", d.text}}}});
    }
  }
  if (!calls.empty()) delta["tool_calls"] = calls;
  std::string out;
  auto take_logprobs = [&]() -> json {
    if (!logprobs_) return nullptr;
    json lp = {{"content", pending}};
    pending = json::array();
    return lp;
  };
  if (!delta.empty()) {
    out += sse_event(chunk(json::array({{{"index", ev.index}, {"delta", delta}, {"logprobs", take_logprobs()}, {"finish_reason", nullptr}}})));
  }
  if (!ev.error.empty()) {
    out += sse_event({{"error", {{"message", ev.error}, {"type", "server_error"}, {"param", nullptr}, {"code", nullptr}}}});
  }
  if (ev.finish_reason) {
    json lp = logprobs_ && !pending.empty() ? take_logprobs() : json(nullptr);
    out += sse_event(chunk(json::array({{{"index", ev.index}, {"delta", json::object()}, {"logprobs", lp}, {"finish_reason", *ev.finish_reason}}})));
  }
  return out;
}

std::string ChatStreamer::end(const Session& session) const {
  std::string out;
  if (include_usage_) {
    out += sse_event({{"id", ids_.id}, {"object", "chat.completion.chunk"}, {"created", ids_.created}, {"model", ids_.model},
                      {"choices", json::array()}, {"usage", usage_json(session)}});
  }
  return out + std::string(kSseDone);
}

CompletionAccumulator::CompletionAccumulator(int32_t n, bool logprobs, std::string echo_text)
    : choices_(static_cast<size_t>(n)), logprobs_(logprobs) {
  for (Choice& ch : choices_) {
    ch.text = echo_text;
    ch.offset = echo_text.size();
    ch.logprobs = {{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()},
                   {"text_offset", json::array()}};
  }
}

json CompletionAccumulator::add(const ChoiceEvent& ev, const tokenizer::Tekken& tekken) {
  Choice& ch = choices_.at(static_cast<size_t>(ev.index));
  json lp = {{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()},
             {"text_offset", json::array()}};
  size_t offset = ch.offset;
  for (const engine::RequestOutput& t : ev.tokens) {
    if (!t.token) continue;
    const std::string piece = tekken.is_special(*t.token) ? "" : tekken.id_to_piece(*t.token);
    lp["tokens"].push_back(tekken.id_to_piece(*t.token));
    lp["token_logprobs"].push_back(t.logprob.value_or(0.0f));
    json top = json::object();
    for (const engine::TokenLogprob& alt : t.top_logprobs) top[tekken.id_to_piece(alt.token)] = alt.logprob;
    lp["top_logprobs"].push_back(top);
    lp["text_offset"].push_back(offset);
    offset += piece.size();
  }
  ch.text += ev.content;
  ch.offset += ev.content.size();
  if (ev.finish_reason) ch.finish_reason = *ev.finish_reason;
  if (!logprobs_) return nullptr;
  for (const char* key : {"tokens", "token_logprobs", "top_logprobs", "text_offset"}) {
    for (json& v : lp[key]) ch.logprobs[key].push_back(v);
  }
  return lp;
}

json CompletionAccumulator::response(const ResponseIds& ids, const Session& session) const {
  json choices = json::array();
  for (size_t i = 0; i < choices_.size(); ++i) {
    const Choice& ch = choices_[i];
    choices.push_back({{"index", i}, {"text", ch.text}, {"logprobs", logprobs_ ? ch.logprobs : json(nullptr)},
                       {"finish_reason", ch.finish_reason}});
  }
  json usage = usage_json(session);
  usage.erase("completion_tokens_details");
  return {{"id", ids.id}, {"object", "text_completion"}, {"created", ids.created}, {"model", ids.model},
          {"choices", choices}, {"usage", usage}};
}

json CompletionAccumulator::chunk(const ResponseIds& ids, const ChoiceEvent& ev, json logprobs) const {
  return {{"id", ids.id}, {"object", "text_completion"}, {"created", ids.created}, {"model", ids.model},
          {"choices", json::array({{{"index", ev.index}, {"text", ev.content}, {"logprobs", logprobs},
                                    {"finish_reason", ev.finish_reason ? json(*ev.finish_reason) : json(nullptr)}}})}};
}

}  // namespace quatre::server
