// POST /v1/chat/completions and /v1/completions: request -> prompt ids -> Session -> JSON or SSE
// (PROTOCOL §4.2-4.8). A client that goes away drops its Session, which cancels the request in the engine.
#include <chrono>
#include <memory>

#include <fmt/format.h>

#include "core/error.h"
#include "grammar/constraint.h"
#include "server/api_error.h"
#include "server/endpoints.h"
#include "server/request_images.h"
#include "server/responses.h"
#include "server/session.h"
#include "server/sse.h"
#include "tokenizer/chat_render.h"
#include "tokenizer/chat_request.h"

namespace quatre::server {
namespace {

using nlohmann::json;
using tokenizer::JsonValue;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// The engine request of a prompt and the generation fields; 400 when prompt + max_tokens exceed the context.
engine::GenerateRequest make_request(std::vector<int32_t> prompt, const GenerationParams& p, const ServingModel& m) {
  const int64_t n_prompt = static_cast<int64_t>(prompt.size());
  const int64_t budget = m.max_model_len - n_prompt;
  const int64_t wanted = p.max_tokens ? *p.max_tokens : std::max<int64_t>(budget, 1);
  if (n_prompt + wanted > m.max_model_len) {
    throw ApiError(400,
                   fmt::format("This model's maximum context length is {} tokens. However, you requested {} tokens ({} in the "
                               "messages, {} in the completion). Please reduce the length of the messages or completion.",
                               m.max_model_len, n_prompt + wanted, n_prompt, wanted),
                   "messages", "context_length_exceeded");
  }
  engine::GenerateRequest g;
  g.prompt = std::move(prompt);
  g.sampling = p.sampling;
  g.max_tokens = static_cast<int32_t>(wanted);
  g.stop_ids = p.stop_token_ids;
  g.ignore_eos = p.ignore_eos;
  g.n = p.n;
  g.logprobs = p.logprobs;
  g.top_logprobs = p.top_logprobs;
  return g;
}

// The tool-call ids we hand out: "call_" + 9 alphanumerics.
tokenizer::ToolCallIdGenerator call_ids() {
  return [next = tokenizer::random_tool_call_ids()] { return "call_" + next(); };
}

// Constrained decoding (src/grammar): a forced tool call (tool_choice required/any or named) or a JSON
// response_format; reasoning_effort "high" lets a free [THINK] block come first. Null: unconstrained.
std::shared_ptr<const engine::TokenConstraint> constraint_for(const GenerationParams& p, const tokenizer::ChatRequest& chat,
                                                              const std::shared_ptr<const grammar::Vocabulary>& vocab) {
  const grammar::ConstraintOptions options{.allow_think = chat.reasoning_effort == std::optional<std::string>("high")};
  if (p.tool_choice.kind == ToolChoice::Kind::kRequired || p.tool_choice.kind == ToolChoice::Kind::kNamed) {
    std::vector<grammar::ToolSpec> tools;
    for (const tokenizer::Tool& t : chat.tools) tools.push_back({t.name, t.parameters});
    std::optional<std::string> forced;
    if (p.tool_choice.kind == ToolChoice::Kind::kNamed) forced = p.tool_choice.name;
    return grammar::tool_call_constraint(vocab, tools, forced, p.parallel_tool_calls, options);
  }
  switch (p.response_format.kind) {
    case ResponseFormat::Kind::kText: return nullptr;
    case ResponseFormat::Kind::kJsonObject: return grammar::json_constraint(vocab, nullptr, options);
    case ResponseFormat::Kind::kJsonSchema: return grammar::json_constraint(vocab, &p.response_format.schema, options);
  }
  return nullptr;
}

struct Responder {
  std::shared_ptr<void> in_flight;  // Context::in_flight_guard(): held until the response is written
  std::shared_ptr<Session> session;
  // Streaming: the opening bytes, then the bytes of each event, then the end.
  std::string opening;
  std::function<std::string(const ChoiceEvent&)> on_event;
  std::function<std::string()> on_end;
  // Non-streaming: the whole body once done (and its status, 500 when generation failed).
  std::function<std::pair<int, std::string>()> whole;
};

// SSE: polls the session on the connection's thread; a failed write (client gone) ends the provider, which
// drops the Session and so cancels the request.
void respond_stream(Responder r, httplib::Response& res, double keep_alive_seconds) {
  struct State {
    Responder r;
    bool is_started = false;
    Clock::time_point last_write = Clock::now();
  };
  auto st = std::make_shared<State>();
  st->r = std::move(r);
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider("text/event-stream", [st, keep_alive_seconds](size_t, httplib::DataSink& sink) {
    std::string out;
    if (!st->is_started) {
      st->is_started = true;
      out = st->r.opening;
    } else if (st->r.session->is_done()) {
      out = st->r.on_end();
      if (!sink.write(out.data(), out.size())) return false;
      sink.done();
      return true;
    } else {
      for (const ChoiceEvent& ev : st->r.session->poll(100ms)) out += st->r.on_event(ev);
      if (out.empty() && Clock::now() - st->last_write > std::chrono::duration<double>(keep_alive_seconds)) out = sse_comment("keep-alive");
    }
    if (out.empty()) return true;
    st->last_write = Clock::now();
    return sink.write(out.data(), out.size());
  });
}

// JSON: waits in the handler for a short request; a longer one is sent chunked with a space (valid leading JSON
// whitespace) every second, so a client that went away is noticed and its request cancelled.
void respond_whole(Responder r, httplib::Response& res) {
  const Clock::time_point deadline = Clock::now() + 500ms;
  while (!r.session->is_done() && Clock::now() < deadline) {
    for (const ChoiceEvent& ev : r.session->poll(50ms)) r.on_event(ev);
  }
  if (r.session->is_done()) {
    const auto [status, body] = r.whole();
    res.status = status;
    res.set_content(body, "application/json");
    return;
  }
  auto st = std::make_shared<Responder>(std::move(r));
  res.set_chunked_content_provider("application/json", [st](size_t, httplib::DataSink& sink) {
    const Clock::time_point until = Clock::now() + 1s;
    while (!st->session->is_done() && Clock::now() < until) {
      for (const ChoiceEvent& ev : st->session->poll(100ms)) st->on_event(ev);
    }
    if (!st->session->is_done()) return sink.write(" ", 1);
    const std::string body = st->whole().second;
    if (!sink.write(body.data(), body.size())) return false;
    sink.done();
    return true;
  });
}

}  // namespace

void serve_chat(Context& context, const httplib::Request& req, httplib::Response& res) {
  std::shared_ptr<void> in_flight = context.in_flight_guard();
  const ServingModel& m = context.require_model();
  const JsonValue body = parse_body(req);
  if (const JsonValue* msgs = body.find("messages"); msgs != nullptr && msgs->is_array() &&
                                                     std::ssize(msgs->as_array()) > context.options.limits.max_messages) {
    throw bad_field("messages", fmt::format("at most {} messages, got {}", context.options.limits.max_messages, msgs->as_array().size()));
  }
  const GenerationParams p = parse_generation_params(body, Endpoint::kChat, [&] {
    const JsonValue* tools = body.find("tools");
    return tools != nullptr && tools->is_array() && !tools->as_array().empty();
  }(), context.options.limits);
  context.check_model_name(p.model);
  tokenizer::ChatRequest chat = tokenizer::parse_chat_request(body);
  const RequestImages images = RequestImages::read(chat, body, ImageRules::from(context.options), m.vision, m.no_vision);  // decoded, sized
  if (p.tool_choice.kind == ToolChoice::Kind::kNamed &&
      std::none_of(chat.tools.begin(), chat.tools.end(), [&](const tokenizer::Tool& t) { return t.name == p.tool_choice.name; })) {
    throw bad_field("tool_choice.function.name", fmt::format("\"{}\" is not among the request's tools", p.tool_choice.name));
  }
  const tokenizer::RenderedPrompt prompt = tokenizer::render_chat(chat, *m.tekken);
  engine::GenerateRequest g = make_request(prompt.ids, p, m);
  g.constraint = constraint_for(p, chat, context.vocab);
  if (!images.empty()) {  // the encoder runs here, on the connection's thread: the engine never waits for it
    g.image_embeddings = images.features(prompt.images, *m.vision);
    g.image_row_hashes = engine::hash_image_rows(g.image_embeddings, m.vision->text_hidden());  // for the prefix cache
    g.image_token_id = static_cast<int32_t>(m.vision->config().image_token_id);
  }

  auto session = std::make_shared<Session>(*m.tekken, *m.loop, context.metrics, *m.engine,
                                           SessionOptions{.is_chat = true, .stop = p.stop, .parallel_tool_calls = p.parallel_tool_calls,
                                                          .tool_call_ids = call_ids()});
  session->submit(std::move(g));
  const ResponseIds ids{.id = random_id("chatcmpl-"), .created = unix_now(), .model = context.options.served_model_name};
  const tokenizer::Tekken* tekken = m.tekken;
  Responder r;
  r.in_flight = in_flight;
  r.session = session;
  if (p.stream) {
    auto streamer = std::make_shared<ChatStreamer>(ids, p.n, p.logprobs, p.include_reasoning, p.include_usage);
    r.opening = streamer->role_chunks();
    r.on_event = [streamer, tekken](const ChoiceEvent& ev) { return streamer->event_chunks(ev, *tekken); };
    r.on_end = [streamer, session] { return streamer->end(*session); };
    respond_stream(std::move(r), res, context.options.sse_keep_alive_seconds);
  } else {
    auto acc = std::make_shared<ChatAccumulator>(p.n, p.logprobs, p.include_reasoning);
    r.on_event = [acc, tekken](const ChoiceEvent& ev) {
      acc->add(ev, *tekken);
      return std::string();
    };
    r.whole = [acc, ids, session]() -> std::pair<int, std::string> {
      if (const std::string error = acc->first_error(); !error.empty()) return {500, dump(error_body(ApiError(500, error)))};
      return {200, dump(acc->response(ids, *session))};
    };
    respond_whole(std::move(r), res);
  }
}

namespace {

// `prompt`: a string (encoded after <s>, special-token text as plain bytes), an array of token ids, or an
// array holding one of those. Several prompts in one request are not supported.
std::vector<int32_t> completion_prompt(const JsonValue& body, const tokenizer::Tekken& tekken) {
  const JsonValue* prompt = body.find("prompt");
  if (prompt == nullptr || prompt->is_null()) throw bad_field("prompt", "required");
  const JsonValue* one = prompt;
  if (prompt->is_array() && !prompt->as_array().empty() && !prompt->as_array()[0].is_int()) {
    if (prompt->as_array().size() != 1) throw bad_field("prompt", "one prompt per request (batched prompts are not supported)");
    one = &prompt->as_array()[0];
  }
  std::vector<int32_t> ids;
  if (one->is_string()) {
    ids.push_back(tekken.bos_id());
    tekken.encode_into(one->as_string(), ids);
    return ids;
  }
  if (!one->is_array()) throw bad_field("prompt", fmt::format("expected a string or an array of token ids, got {}", one->type_name()));
  for (const JsonValue& x : one->as_array()) {
    const std::optional<int64_t> id = x.as_int64();
    if (!id || *id < 0 || *id >= tekken.vocab_size()) throw bad_field("prompt", "token ids must be integers within the vocabulary");
    ids.push_back(static_cast<int32_t>(*id));
  }
  if (ids.empty()) throw bad_field("prompt", "empty");
  return ids;
}

}  // namespace

void serve_completion(Context& context, const httplib::Request& req, httplib::Response& res) {
  std::shared_ptr<void> in_flight = context.in_flight_guard();
  const ServingModel& m = context.require_model();
  const JsonValue body = parse_body(req);
  const GenerationParams p = parse_generation_params(body, Endpoint::kCompletions, false, context.options.limits);
  context.check_model_name(p.model);
  std::vector<int32_t> prompt = completion_prompt(body, *m.tekken);
  const std::string echo = p.echo ? m.tekken->decode(prompt) : std::string();
  engine::GenerateRequest g = make_request(std::move(prompt), p, m);
  auto session = std::make_shared<Session>(*m.tekken, *m.loop, context.metrics, *m.engine,
                                           SessionOptions{.is_chat = false, .stop = p.stop, .parallel_tool_calls = true, .tool_call_ids = {}});
  session->submit(std::move(g));
  const ResponseIds ids{.id = random_id("cmpl-"), .created = unix_now(), .model = context.options.served_model_name};
  const tokenizer::Tekken* tekken = m.tekken;
  auto acc = std::make_shared<CompletionAccumulator>(p.n, p.logprobs, echo);
  Responder r;
  r.in_flight = in_flight;
  r.session = session;
  if (p.stream) {
    const bool include_usage = p.include_usage;
    if (!echo.empty()) {
      for (int32_t i = 0; i < p.n; ++i) {
        ChoiceEvent ev;
        ev.index = i;
        ev.content = echo;
        r.opening += sse_event(acc->chunk(ids, ev, nullptr));
      }
    }
    r.on_event = [acc, ids, tekken](const ChoiceEvent& ev) {
      json lp = acc->add(ev, *tekken);
      if (ev.content.empty() && !ev.finish_reason) return std::string();
      return sse_event(acc->chunk(ids, ev, std::move(lp)));
    };
    r.on_end = [acc, ids, session, include_usage] {
      std::string out;
      if (include_usage) {
        json usage = acc->response(ids, *session)["usage"];
        out += sse_event({{"id", ids.id}, {"object", "text_completion"}, {"created", ids.created}, {"model", ids.model},
                          {"choices", json::array()}, {"usage", usage}});
      }
      return out + std::string(kSseDone);
    };
    respond_stream(std::move(r), res, context.options.sse_keep_alive_seconds);
  } else {
    r.on_event = [acc, tekken](const ChoiceEvent& ev) {
      acc->add(ev, *tekken);
      return std::string();
    };
    r.whole = [acc, ids, session]() -> std::pair<int, std::string> { return {200, dump(acc->response(ids, *session))}; };
    respond_whole(std::move(r), res);
  }
}

}  // namespace quatre::server
