// Reading the generation fields: one small reader per JSON type, each naming the field in its error.
#include "server/request_params.h"

#include <charconv>
#include <cmath>

#include <fmt/format.h>

#include "server/api_error.h"
#include "tokenizer/chat_request.h"

namespace quatre::server {
namespace {

using tokenizer::JsonValue;

// A field that is absent or null reads as nullopt.
const JsonValue* field(const JsonValue& body, std::string_view name) {
  const JsonValue* v = body.find(name);
  return v == nullptr || v->is_null() ? nullptr : v;
}

std::optional<double> number(const JsonValue& body, std::string_view name, double lo, double hi) {
  const JsonValue* v = field(body, name);
  if (v == nullptr) return std::nullopt;
  double x = 0;
  if (v->is_float()) {
    x = v->as_float();
  } else if (v->is_int()) {
    const std::optional<int64_t> i = v->as_int64();
    if (!i) throw bad_field(name, "number out of range");
    x = static_cast<double>(*i);
  } else {
    throw bad_field(name, fmt::format("expected a number, got {}", v->type_name()));
  }
  if (!std::isfinite(x) || x < lo || x > hi) throw bad_field(name, fmt::format("must be between {} and {}, got {}", lo, hi, x));
  return x;
}

std::optional<int64_t> integer(const JsonValue& body, std::string_view name, int64_t lo, int64_t hi) {
  const JsonValue* v = field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_int()) throw bad_field(name, fmt::format("expected an integer, got {}", v->type_name()));
  const std::optional<int64_t> i = v->as_int64();
  if (!i || *i < lo || *i > hi) throw bad_field(name, fmt::format("must be an integer between {} and {}", lo, hi));
  return *i;
}

std::optional<bool> boolean(const JsonValue& body, std::string_view name) {
  const JsonValue* v = field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_bool()) throw bad_field(name, fmt::format("expected a boolean, got {}", v->type_name()));
  return v->as_bool();
}

std::vector<std::string> stop_strings(const JsonValue& body, const Limits& limits) {
  const JsonValue* v = field(body, "stop");
  if (v == nullptr) return {};
  if (v->is_string()) return {v->as_string()};
  if (!v->is_array()) throw bad_field("stop", fmt::format("expected a string or an array of strings, got {}", v->type_name()));
  if (std::ssize(v->as_array()) > limits.max_stop_strings) {
    throw bad_field("stop", fmt::format("at most {} stop strings, got {}", limits.max_stop_strings, v->as_array().size()));
  }
  std::vector<std::string> out;
  for (const JsonValue& s : v->as_array()) {
    if (!s.is_string()) throw bad_field("stop", fmt::format("expected strings, got {}", s.type_name()));
    out.push_back(s.as_string());
  }
  return out;
}

std::vector<int32_t> stop_token_ids(const JsonValue& body) {
  const JsonValue* v = field(body, "stop_token_ids");
  if (v == nullptr) return {};
  if (!v->is_array()) throw bad_field("stop_token_ids", "expected an array of token ids");
  std::vector<int32_t> out;
  for (const JsonValue& x : v->as_array()) {
    const std::optional<int64_t> id = x.as_int64();
    if (!id || *id < 0 || *id > INT32_MAX) throw bad_field("stop_token_ids", "expected non-negative integer token ids");
    out.push_back(static_cast<int32_t>(*id));
  }
  return out;
}

std::vector<std::pair<int32_t, float>> logit_bias(const JsonValue& body) {
  const JsonValue* v = field(body, "logit_bias");
  if (v == nullptr) return {};
  if (!v->is_object()) throw bad_field("logit_bias", fmt::format("expected an object of token id -> bias, got {}", v->type_name()));
  std::vector<std::pair<int32_t, float>> out;
  for (const auto& [key, bias] : v->as_object()) {
    int64_t id = -1;
    const auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), id);
    if (ec != std::errc() || end != key.data() + key.size() || id < 0 || id > INT32_MAX) {
      throw bad_field("logit_bias", fmt::format("key \"{}\" is not a token id", key));
    }
    const std::string name = fmt::format("logit_bias.{}", key);
    const JsonValue wrapper = JsonValue::object({{name, bias}});
    const std::optional<double> b = number(wrapper, name, -100, 100);
    if (!b) throw bad_field(name, "expected a number between -100 and 100");
    out.emplace_back(static_cast<int32_t>(id), static_cast<float>(*b));
  }
  return out;
}

ToolChoice tool_choice(const JsonValue& body, bool has_tools) {
  const JsonValue* v = field(body, "tool_choice");
  ToolChoice c;
  c.kind = has_tools ? ToolChoice::Kind::kAuto : ToolChoice::Kind::kNone;
  if (v == nullptr) return c;
  if (v->is_string()) {
    const std::string& s = v->as_string();
    if (s == "none") c.kind = ToolChoice::Kind::kNone;
    else if (s == "auto") c.kind = ToolChoice::Kind::kAuto;
    else if (s == "required" || s == "any") c.kind = ToolChoice::Kind::kRequired;
    else throw bad_field("tool_choice", fmt::format("expected none, auto, required, any or a named function, got \"{}\"", s));
  } else if (v->is_object()) {
    const JsonValue* fn = v->find("function");
    const JsonValue* name = fn == nullptr ? nullptr : fn->find("name");
    if (name == nullptr || !name->is_string()) throw bad_field("tool_choice.function.name", "expected the name of a function");
    c.kind = ToolChoice::Kind::kNamed;
    c.name = name->as_string();
  } else {
    throw bad_field("tool_choice", fmt::format("expected a string or an object, got {}", v->type_name()));
  }
  if (c.kind != ToolChoice::Kind::kNone && !has_tools) throw bad_field("tool_choice", "a tool choice other than none needs tools");
  return c;
}

ResponseFormat response_format(const JsonValue& body) {
  const JsonValue* v = field(body, "response_format");
  ResponseFormat f;
  if (v == nullptr) return f;
  if (!v->is_object()) throw bad_field("response_format", fmt::format("expected an object, got {}", v->type_name()));
  const JsonValue* type = v->find("type");
  if (type == nullptr || !type->is_string()) throw bad_field("response_format.type", "expected text, json_object or json_schema");
  const std::string& t = type->as_string();
  if (t == "text") return f;
  if (t == "json_object") {
    f.kind = ResponseFormat::Kind::kJsonObject;
    return f;
  }
  if (t != "json_schema") throw bad_field("response_format.type", fmt::format("expected text, json_object or json_schema, got \"{}\"", t));
  f.kind = ResponseFormat::Kind::kJsonSchema;
  const JsonValue* js = v->find("json_schema");
  if (js == nullptr || !js->is_object()) throw bad_field("response_format.json_schema", "expected an object with name and schema");
  const JsonValue* name = js->find("name");
  if (name == nullptr || !name->is_string()) throw bad_field("response_format.json_schema.name", "expected a string");
  f.name = name->as_string();
  const JsonValue* schema = js->find("schema");
  if (schema == nullptr || !(schema->is_object() || schema->is_bool())) {
    throw bad_field("response_format.json_schema.schema", "expected a JSON schema object");
  }
  if (schema->is_object()) tokenizer::check_json_schema_draft7(*schema, "response_format.json_schema.schema");
  f.schema = *schema;
  f.strict = boolean(*js, "strict").value_or(false);
  return f;
}

void read_sampling(const JsonValue& body, engine::SamplingParams& s) {
  s.temperature = static_cast<float>(number(body, "temperature", 0, 2).value_or(0.7));
  s.top_p = static_cast<float>(number(body, "top_p", 0, 1).value_or(1.0));
  if (s.top_p <= 0) throw bad_field("top_p", "must be in (0, 1]");
  s.top_k = static_cast<int32_t>(integer(body, "top_k", -1, INT32_MAX).value_or(0));
  s.min_p = static_cast<float>(number(body, "min_p", 0, 1).value_or(0));
  s.presence_penalty = static_cast<float>(number(body, "presence_penalty", -2, 2).value_or(0));
  s.frequency_penalty = static_cast<float>(number(body, "frequency_penalty", -2, 2).value_or(0));
  s.repetition_penalty = static_cast<float>(number(body, "repetition_penalty", 1e-6, 100).value_or(1));
  s.logit_bias = logit_bias(body);
  const std::optional<int64_t> seed = integer(body, "seed", INT64_MIN, INT64_MAX);
  const std::optional<int64_t> random_seed = integer(body, "random_seed", 0, INT64_MAX);
  if (seed && random_seed && *seed != *random_seed) throw bad_field("random_seed", "differs from seed; give one of them");
  if (seed) s.seed = static_cast<uint64_t>(*seed);
  if (random_seed) s.seed = static_cast<uint64_t>(*random_seed);
}

}  // namespace

GenerationParams parse_generation_params(const JsonValue& body, Endpoint endpoint, bool has_tools, const Limits& limits) {
  if (!body.is_object()) throw ApiError(400, fmt::format("request body: expected a JSON object, got {}", body.type_name()));
  GenerationParams p;
  if (const JsonValue* m = field(body, "model")) {
    if (!m->is_string()) throw bad_field("model", fmt::format("expected a string, got {}", m->type_name()));
    p.model = m->as_string();
  }
  read_sampling(body, p.sampling);
  const std::optional<int64_t> max_tokens = integer(body, "max_tokens", 0, INT32_MAX);
  const std::optional<int64_t> max_completion = integer(body, "max_completion_tokens", 0, INT32_MAX);
  if (max_completion) p.max_tokens = static_cast<int32_t>(*max_completion);
  else if (max_tokens) p.max_tokens = static_cast<int32_t>(*max_tokens);
  if (p.max_tokens && *p.max_tokens < 1) {
    throw bad_field(max_completion ? "max_completion_tokens" : "max_tokens", "must be at least 1");
  }
  p.n = static_cast<int32_t>(integer(body, "n", 1, limits.max_n).value_or(1));
  p.stop = stop_strings(body, limits);
  p.stop_token_ids = stop_token_ids(body);
  p.stream = boolean(body, "stream").value_or(false);
  if (const JsonValue* so = field(body, "stream_options")) {
    if (!so->is_object()) throw bad_field("stream_options", fmt::format("expected an object, got {}", so->type_name()));
    if (!p.stream) throw bad_field("stream_options", "only allowed with stream: true");
    const std::optional<bool> iu = boolean(*so, "include_usage");
    p.include_usage = iu.value_or(false);
  }
  p.ignore_eos = boolean(body, "ignore_eos").value_or(false);
  if (endpoint == Endpoint::kChat) {
    p.logprobs = boolean(body, "logprobs").value_or(false);
    p.top_logprobs = static_cast<int32_t>(integer(body, "top_logprobs", 0, 20).value_or(0));
    if (p.top_logprobs > 0 && !p.logprobs) throw bad_field("top_logprobs", "requires logprobs: true");
    p.tool_choice = tool_choice(body, has_tools);
    p.parallel_tool_calls = boolean(body, "parallel_tool_calls").value_or(true);
    p.response_format = response_format(body);
    p.include_reasoning = boolean(body, "include_reasoning").value_or(true);
  } else {
    const std::optional<int64_t> lp = integer(body, "logprobs", 0, 5);
    p.logprobs = lp.has_value();
    p.top_logprobs = static_cast<int32_t>(lp.value_or(0));
    p.echo = boolean(body, "echo").value_or(false);
    if (field(body, "suffix") != nullptr) throw bad_field("suffix", "is not supported (no fill-in-the-middle for this model)");
  }
  return p;
}

}  // namespace quatre::server
