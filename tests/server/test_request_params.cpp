// parse_generation_params: defaults, OpenAI and Mistral spellings, and a 400 naming the field for each
// wrong type or value.
#include <gtest/gtest.h>

#include "server/api_error.h"
#include "server/request_params.h"

namespace quatre::server {
namespace {

GenerationParams chat(const std::string& json, bool has_tools = false) {
  return parse_generation_params(tokenizer::parse_json(json), Endpoint::kChat, has_tools, Limits{});
}

// The field named by the 400 that `json` gets.
std::string rejected_param(const std::string& json, Endpoint endpoint = Endpoint::kChat, bool has_tools = false) {
  try {
    parse_generation_params(tokenizer::parse_json(json), endpoint, has_tools, Limits{});
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400) << json;
    return e.param();
  }
  ADD_FAILURE() << "accepted: " << json;
  return {};
}

TEST(RequestParams, Defaults) {
  const GenerationParams p = chat(R"({"messages": []})");
  EXPECT_EQ(p.sampling.temperature, 0.7f);
  EXPECT_EQ(p.sampling.top_p, 1.0f);
  EXPECT_FALSE(p.max_tokens.has_value());
  EXPECT_EQ(p.n, 1);
  EXPECT_FALSE(p.stream);
  EXPECT_EQ(p.tool_choice.kind, ToolChoice::Kind::kNone);
  EXPECT_EQ(chat("{}", true).tool_choice.kind, ToolChoice::Kind::kAuto);
  EXPECT_EQ(p.response_format.kind, ResponseFormat::Kind::kText);
  EXPECT_FALSE(p.sampling.seed.has_value());
}

TEST(RequestParams, OpenAiAndMistralSpellings) {
  const GenerationParams p = chat(R"({"max_tokens": 5, "max_completion_tokens": 9, "seed": 3, "temperature": 0,
      "stop": "x", "n": 2, "logprobs": true, "top_logprobs": 4, "stream": true, "stream_options": {"include_usage": true},
      "logit_bias": {"17": -100, "5": 2.5}, "presence_penalty": 1, "frequency_penalty": -0.5, "unknown_field": [1]})");
  EXPECT_EQ(p.max_tokens, 9);  // max_completion_tokens wins
  EXPECT_EQ(p.sampling.seed, 3u);
  EXPECT_EQ(p.sampling.temperature, 0.0f);
  EXPECT_EQ(p.stop, std::vector<std::string>{"x"});
  EXPECT_EQ(p.n, 2);
  EXPECT_TRUE(p.logprobs);
  EXPECT_EQ(p.top_logprobs, 4);
  EXPECT_TRUE(p.include_usage);
  EXPECT_EQ(p.sampling.logit_bias, (std::vector<std::pair<int32_t, float>>{{17, -100.0f}, {5, 2.5f}}));
  EXPECT_EQ(p.sampling.presence_penalty, 1.0f);
  const GenerationParams m = chat(R"({"random_seed": 8, "max_tokens": 4, "stop": ["a", "b"]})");
  EXPECT_EQ(m.sampling.seed, 8u);
  EXPECT_EQ(m.max_tokens, 4);
  EXPECT_EQ(m.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(chat(R"({"seed": 8, "random_seed": 8})").sampling.seed, 8u);
}

TEST(RequestParams, ToolChoiceAndResponseFormat) {
  EXPECT_EQ(chat(R"({"tool_choice": "any"})", true).tool_choice.kind, ToolChoice::Kind::kRequired);
  EXPECT_EQ(chat(R"({"tool_choice": "required"})", true).tool_choice.kind, ToolChoice::Kind::kRequired);
  const GenerationParams named = chat(R"({"tool_choice": {"type": "function", "function": {"name": "f"}}})", true);
  EXPECT_EQ(named.tool_choice.kind, ToolChoice::Kind::kNamed);
  EXPECT_EQ(named.tool_choice.name, "f");
  EXPECT_FALSE(chat(R"({"parallel_tool_calls": false})", true).parallel_tool_calls);
  EXPECT_EQ(chat(R"({"response_format": {"type": "json_object"}})").response_format.kind, ResponseFormat::Kind::kJsonObject);
  const GenerationParams js = chat(R"({"response_format": {"type": "json_schema", "json_schema": {"name": "w", "strict": true,
      "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}}})");
  EXPECT_EQ(js.response_format.kind, ResponseFormat::Kind::kJsonSchema);
  EXPECT_EQ(js.response_format.name, "w");
  EXPECT_TRUE(js.response_format.strict);
  EXPECT_TRUE(js.response_format.schema.find("properties") != nullptr);
}

TEST(RequestParams, WrongTypesAndValuesNameTheField) {
  EXPECT_EQ(rejected_param(R"({"temperature": "hot"})"), "temperature");
  EXPECT_EQ(rejected_param(R"({"temperature": 2.5})"), "temperature");
  EXPECT_EQ(rejected_param(R"({"top_p": 0})"), "top_p");
  EXPECT_EQ(rejected_param(R"({"max_tokens": -1})"), "max_tokens");
  EXPECT_EQ(rejected_param(R"({"max_tokens": 0})"), "max_tokens");
  EXPECT_EQ(rejected_param(R"({"max_completion_tokens": 1.5})"), "max_completion_tokens");
  EXPECT_EQ(rejected_param(R"({"n": 0})"), "n");
  EXPECT_EQ(rejected_param(R"({"n": 17})"), "n");
  EXPECT_EQ(rejected_param(R"({"stop": 3})"), "stop");
  EXPECT_EQ(rejected_param(R"({"stop": ["a", 1]})"), "stop");
  EXPECT_EQ(rejected_param(R"({"stop": ["1","2","3","4","5","6","7","8","9","10","11","12","13","14","15","16","17"]})"), "stop");
  EXPECT_EQ(rejected_param(R"({"seed": "1"})"), "seed");
  EXPECT_EQ(rejected_param(R"({"random_seed": -1})"), "random_seed");
  EXPECT_EQ(rejected_param(R"({"seed": 1, "random_seed": 2})"), "random_seed");
  EXPECT_EQ(rejected_param(R"({"presence_penalty": 3})"), "presence_penalty");
  EXPECT_EQ(rejected_param(R"({"logit_bias": {"x": 1}})"), "logit_bias");
  EXPECT_EQ(rejected_param(R"({"logit_bias": {"5": 101}})"), "logit_bias.5");
  EXPECT_EQ(rejected_param(R"({"logprobs": 1})"), "logprobs");
  EXPECT_EQ(rejected_param(R"({"top_logprobs": 21, "logprobs": true})"), "top_logprobs");
  EXPECT_EQ(rejected_param(R"({"top_logprobs": 2})"), "top_logprobs");
  EXPECT_EQ(rejected_param(R"({"stream": "yes"})"), "stream");
  EXPECT_EQ(rejected_param(R"({"stream_options": {"include_usage": true}})"), "stream_options");
  EXPECT_EQ(rejected_param(R"({"tool_choice": "auto"})"), "tool_choice");  // no tools
  EXPECT_EQ(rejected_param(R"({"tool_choice": "sometimes"})", Endpoint::kChat, true), "tool_choice");
  EXPECT_EQ(rejected_param(R"({"tool_choice": {"type": "function"}})", Endpoint::kChat, true), "tool_choice.function.name");
  EXPECT_EQ(rejected_param(R"({"response_format": {"type": "xml"}})"), "response_format.type");
  EXPECT_EQ(rejected_param(R"({"response_format": {"type": "json_schema"}})"), "response_format.json_schema");
  EXPECT_EQ(rejected_param(R"({"response_format": {"type": "json_schema", "json_schema": {"name": "n"}}})"),
            "response_format.json_schema.schema");
  EXPECT_EQ(rejected_param(R"({"model": 5})"), "model");
}

TEST(RequestParams, CompletionsFields) {
  const GenerationParams p =
      parse_generation_params(tokenizer::parse_json(R"({"logprobs": 3, "echo": true})"), Endpoint::kCompletions, false, Limits{});
  EXPECT_TRUE(p.logprobs);
  EXPECT_EQ(p.top_logprobs, 3);
  EXPECT_TRUE(p.echo);
  EXPECT_EQ(rejected_param(R"({"logprobs": 6})", Endpoint::kCompletions), "logprobs");
  EXPECT_EQ(rejected_param(R"({"suffix": "x"})", Endpoint::kCompletions), "suffix");
}

}  // namespace
}  // namespace quatre::server
