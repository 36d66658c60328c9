// The endpoints that run no generation: /v1/models, /tokenize, /detokenize (PROTOCOL §4.8).
#include <chrono>

#include <fmt/format.h>

#include "core/error.h"
#include "server/api_error.h"
#include "server/endpoints.h"
#include "server/request_images.h"
#include "server/sse.h"
#include "tokenizer/chat_render.h"
#include "tokenizer/chat_request.h"

namespace quatre::server {

using nlohmann::json;
using tokenizer::JsonValue;

const ServingModel& Context::require_model() const {
  if (!is_ready()) throw ApiError(503, "the model is loading; retry when GET /health answers 200");
  return model;
}

std::shared_ptr<void> Context::in_flight_guard() {
  ++n_in_flight;
  if (draining.load()) {
    --n_in_flight;
    throw ApiError(503, "the server is shutting down");
  }
  return std::shared_ptr<void>(nullptr, [this](void*) { --n_in_flight; });
}

void Context::check_model_name(const std::string& name) const {
  if (name.empty() || name == options.served_model_name) return;
  throw ApiError(404, fmt::format("The model `{}` does not exist; this server serves `{}`.", name, options.served_model_name),
                 "model", "model_not_found");
}

JsonValue parse_body(const httplib::Request& req) {
  JsonValue body = tokenizer::parse_json(req.body, "request body");
  if (!body.is_object()) throw ApiError(400, fmt::format("request body: expected a JSON object, got {}", body.type_name()));
  return body;
}

json models_json(const Context& context, const std::string& id) {
  const int64_t max_len = context.is_ready() ? context.model.max_model_len : 0;
  const json model = {{"id", context.options.served_model_name},
                      {"object", "model"},
                      {"created", std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count()},
                      {"owned_by", "quatre"},
                      {"max_model_len", max_len},
                      {"root", context.options.served_model_name},
                      {"parent", nullptr}};
  if (id.empty()) return {{"object", "list"}, {"data", json::array({model})}};
  context.check_model_name(id);
  return model;
}

namespace {

std::vector<int32_t> ids_of(const JsonValue& v, std::string_view field) {
  if (!v.is_array()) throw bad_field(field, fmt::format("expected an array of token ids, got {}", v.type_name()));
  std::vector<int32_t> ids;
  for (const JsonValue& x : v.as_array()) {
    const std::optional<int64_t> id = x.as_int64();
    if (!id || *id < 0 || *id > INT32_MAX) throw bad_field(field, "expected non-negative integer token ids");
    ids.push_back(static_cast<int32_t>(*id));
  }
  return ids;
}

}  // namespace

void serve_tokenize(Context& context, const httplib::Request& req, httplib::Response& res) {
  const ServingModel& m = context.require_model();
  const JsonValue body = parse_body(req);
  if (const JsonValue* model = body.find("model"); model != nullptr && model->is_string()) context.check_model_name(model->as_string());
  std::vector<int32_t> ids;
  if (body.find("messages") != nullptr) {
    tokenizer::ChatRequest chat = tokenizer::parse_chat_request(body);
    // With a tower, images are sized as chat completions size them (decoded and preprocessed), so the count is
    // the prompt_tokens a chat request reports.
    if (m.vision != nullptr) RequestImages::read(chat, body, ImageRules::from(context.options), m.vision, m.no_vision);
    ids = tokenizer::render_chat(chat, *m.tekken).ids;
  } else {
    const JsonValue* prompt = body.find("prompt");
    if (prompt == nullptr || !prompt->is_string()) throw bad_field("prompt", "expected a string (or give messages)");
    const JsonValue* special = body.find("add_special_tokens");
    if (special != nullptr && !special->is_bool()) throw bad_field("add_special_tokens", "expected a boolean");
    if (special == nullptr || special->as_bool()) ids.push_back(m.tekken->bos_id());
    m.tekken->encode_into(prompt->as_string(), ids);
  }
  json out = {{"count", ids.size()}, {"max_model_len", m.max_model_len}, {"tokens", ids}};
  const JsonValue* strs = body.find("return_token_strs");
  if (strs != nullptr && strs->is_bool() && strs->as_bool()) {
    json pieces = json::array();
    for (int32_t id : ids) pieces.push_back(m.tekken->id_to_piece(id));
    out["token_strs"] = pieces;
  }
  res.set_content(dump(out), "application/json");
}

void serve_detokenize(Context& context, const httplib::Request& req, httplib::Response& res) {
  const ServingModel& m = context.require_model();
  const JsonValue body = parse_body(req);
  const JsonValue* tokens = body.find("tokens");
  if (tokens == nullptr) throw bad_field("tokens", "required");
  const std::vector<int32_t> ids = ids_of(*tokens, "tokens");
  for (int32_t id : ids) {
    if (id >= m.tekken->vocab_size()) throw bad_field("tokens", fmt::format("id {} is outside the vocabulary of {}", id, m.tekken->vocab_size()));
  }
  res.set_content(dump({{"prompt", m.tekken->decode(ids)}}), "application/json");
}

}  // namespace quatre::server
