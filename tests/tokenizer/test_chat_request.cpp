// Chat request parsing (PROTOCOL §2.3), validation (§2.4) and normalization (§2.5), and robustness of the whole
// parse + render path against random edits.
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "core/error.h"
#include "tokenizer/chat_normalize.h"
#include "tokenizer/chat_render.h"
#include "tokenizer/chat_request.h"
#include "chat_test_util.h"

namespace quatre::tokenizer {
namespace {

// The InvalidRequest message of parsing `body`, or "" when it parses.
std::string error_of(std::string_view body) {
  try {
    parse_chat_request(body);
  } catch (const InvalidRequest& e) {
    return e.what();
  }
  return "";
}

// Success when parsing `body` fails with an InvalidRequest whose message contains `fragment`.
testing::AssertionResult rejected(std::string_view body, std::string_view fragment) {
  const std::string err = error_of(body);
  if (err.empty()) return testing::AssertionFailure() << "accepted: " << body;
  if (err.find(fragment) == std::string::npos) {
    return testing::AssertionFailure() << "error \"" << err << "\" lacks \"" << fragment << "\"";
  }
  return testing::AssertionSuccess();
}

const std::string& text_of(const Content& c) { return std::get<std::string>(c); }
const std::vector<Chunk>& chunks_of(const Content& c) { return std::get<std::vector<Chunk>>(c); }

TEST(ChatRequestParse, RolesContentAndFields) {
  const ChatRequest r = parse_chat_request(R"({
    "model": "m", "temperature": 0.3,
    "messages": [
      {"role": "developer", "content": "S"},
      {"role": "user", "content": [{"type": "text", "text": "look"},
                                   {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "high"}},
                                   {"type": "image_url", "image_url": "https://x/y.png"},
                                   {"type": "image", "image": "QUJD"}]},
      {"role": "assistant", "content": null, "tool_calls": [
          {"id": "call/id-1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
          {"id": "x", "function": {"name": "g", "arguments": {"b": [1, 2.0]}}},
          {"id": "y", "function": {"name": "h"}}]},
      {"role": "tool", "tool_call_id": "x", "name": "g", "content": "R"},
      {"role": "tool", "tool_call_id": "call/id-1", "content": [{"type": "text", "text": "R1"}]},
      {"role": "tool", "tool_call_id": "y", "content": ""},
      {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "closed": false},
                                        {"type": "thinking", "thinking": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                                        {"type": "text", "text": "ok"}], "prefix": true}],
    "tools": [{"type": "function", "function": {"name": "f", "strict": true}}],
    "reasoning_effort": "high", "prompt_mode": null})");
  ASSERT_EQ(r.messages.size(), 7u);
  EXPECT_EQ(r.messages[0].role, Role::kSystem);
  EXPECT_EQ(text_of(r.messages[0].content), "S");
  const auto& user = chunks_of(r.messages[1].content);
  ASSERT_EQ(user.size(), 4u);
  EXPECT_EQ(std::get<TextChunk>(user[0]).text, "look");
  EXPECT_EQ(std::get<ImageChunk>(user[1]).source, "data:image/png;base64,AAAA");
  EXPECT_EQ(std::get<ImageChunk>(user[2]).source, "https://x/y.png");
  EXPECT_EQ(std::get<ImageChunk>(user[3]).source, "QUJD");
  const Message& a = r.messages[2];
  EXPECT_EQ(text_of(a.content), "");
  ASSERT_EQ(a.tool_calls.size(), 3u);
  EXPECT_EQ(a.tool_calls[0], (ToolCall{.id = "call/id-1", .name = "f", .arguments = R"({"a":1})"}));
  EXPECT_EQ(a.tool_calls[1], (ToolCall{.id = "x", .name = "g", .arguments = R"({"b": [1, 2.0]})"}));
  EXPECT_EQ(a.tool_calls[2], (ToolCall{.id = "y", .name = "h", .arguments = ""}));
  EXPECT_EQ(r.messages[3].tool_call_id, "x");
  EXPECT_EQ(r.messages[3].name, "g");
  const auto& last = chunks_of(r.messages[6].content);
  ASSERT_EQ(last.size(), 3u);
  EXPECT_EQ(std::get<ThinkChunk>(last[0]), (ThinkChunk{.thinking = "hmm", .closed = false}));
  EXPECT_EQ(std::get<ThinkChunk>(last[1]), (ThinkChunk{.thinking = "ab", .closed = true}));
  EXPECT_TRUE(r.messages[6].prefix);
  ASSERT_EQ(r.tools.size(), 1u);
  EXPECT_EQ(r.tools[0].name, "f");
  EXPECT_EQ(r.tools[0].description, "");
  EXPECT_EQ(dump_json(r.tools[0].parameters), "{}");
  EXPECT_EQ(r.reasoning_effort, "high");
  EXPECT_FALSE(r.continue_final_message);
}

TEST(ChatRequestParse, ReasoningContentBecomesLeadingThinkChunk) {
  const ChatRequest r = parse_chat_request(R"({"messages": [
      {"role": "user", "content": "Solve 2+2."},
      {"role": "assistant", "content": "The answer is 4.", "reasoning_content": "2+2 is 4.", "reasoning": "2+2 is 4."},
      {"role": "user", "content": "Thanks"}]})");
  const auto& cs = chunks_of(r.messages[1].content);
  ASSERT_EQ(cs.size(), 2u);
  EXPECT_EQ(std::get<ThinkChunk>(cs[0]), (ThinkChunk{.thinking = "2+2 is 4.", .closed = true}));
  EXPECT_EQ(std::get<TextChunk>(cs[1]).text, "The answer is 4.");
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"},
      {"role": "assistant", "content": "a", "reasoning_content": "x", "reasoning": "y"}, {"role": "user", "content": "q"}]})",
                  "messages[1].reasoning:"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"},
      {"role": "assistant", "content": [{"type": "thinking", "thinking": "t"}], "reasoning": "y"}, {"role": "user", "content": "q"}]})",
                  "messages[1].content:"));
}

TEST(ChatRequestParse, SafePromptPrependsSystemMessage) {
  const ChatRequest r = parse_chat_request(R"({"messages": [{"role": "user", "content": "hi"}], "safe_prompt": true})");
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[0].role, Role::kSystem);
  EXPECT_EQ(text_of(r.messages[0].content), std::string(kSafePrompt));
}

TEST(ChatRequestParse, TypeAndChunkErrorsNameTheField) {
  EXPECT_TRUE(rejected("[1]", "request body: expected a JSON object"));
  EXPECT_TRUE(rejected("{", "request body is not valid JSON"));
  EXPECT_TRUE(rejected(R"({})", "messages: is required"));
  EXPECT_TRUE(rejected(R"({"messages": {}})", "messages: expected an array"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "bot", "content": "x"}]})", "messages[0].role: unknown role \"bot\""));
  EXPECT_TRUE(rejected(R"({"messages": [{"content": "x"}]})", "messages[0].role: is required"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": 3}]})", "messages[0].content: expected a string or an array"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user"}]})", "messages[0].content: is required for user messages"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "input_audio", "input_audio": {}}]}]})",
                  "messages[0].content[1].type: \"input_audio\": audio input is not supported"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": [{"type": "audio_url", "audio_url": "u"}]}]})",
                  "messages[0].content[0].type"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": [{"type": "video", "x": 1}]}]})",
                  "messages[0].content[0].type: unknown chunk type \"video\""));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "system", "content": [{"type": "thinking", "thinking": "t"}]}, {"role": "user", "content": "u"}]})",
                  "messages[0].content[0]: thinking chunks are not allowed in system messages"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": "u"}]}]})",
                  "messages[0].content[0]: image chunks are not allowed in system messages"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": [{"type": "image", "image": "x"}], "prefix": true}]})",
                  "messages[1].content[0]: image chunks are not allowed in assistant messages"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": [{"type": "thinking", "thinking": "t"}]}]})",
                  "messages[0].content[0]: thinking chunks are not allowed in user messages"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": [{"type": "text"}]}]})", "messages[0].content[0].text: is required"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"detail": "low"}}]}]})",
                  "messages[0].content[0].image_url.url: is required"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": [{"type": "thinking", "thinking": [{"type": "image"}]}], "prefix": true}]})",
                  "messages[1].content[0].thinking[0].type"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}]})",
                  "messages[1].tool_call_id: is required for tool messages"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": [1]}}]}, {"role": "tool", "tool_call_id": "a", "content": ""}]})",
                  "messages[1].tool_calls[0].function.arguments: expected a JSON string or an object, got array"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [{"id": "a", "type": "web", "function": {"name": "f"}}]}]})",
                  "messages[1].tool_calls[0].type"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"}], "tools": [{"type": "web_search"}]})",
                  "tools[0].type: unsupported tool type \"web_search\""));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"}], "tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]})",
                  "tools[0].function.parameters: expected a JSON Schema object"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"}], "prompt_mode": "reasoning"})",
                  "prompt_mode: got \"reasoning\": Reasoning prompt mode is not enabled for this model"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"}], "chat_template": "x"})", "chat_template is not supported"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"}], "reasoning_effort": 1})", "reasoning_effort: expected a string"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"}], "continue_final_message": "yes"})",
                  "continue_final_message: expected a boolean"));
}

TEST(ChatRequestValidate, ConversationStructure) {
  EXPECT_TRUE(rejected(R"({"messages": []})", "messages: must contain at least one message"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "assistant", "content": "a"}]})",
                  "messages[0].role: a conversation of one message must be a user or system message, got assistant"));
  EXPECT_EQ(error_of(R"({"messages": [{"role": "system", "content": "s"}]})"), "");
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "system", "content": "s"}]})",
                  "messages[2].role: a system message cannot follow a assistant message (messages[1])"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"}, {"role": "tool", "tool_call_id": "a", "content": "r"}]})",
                  "messages[1].role: a tool message cannot follow a user message"));
  EXPECT_EQ(error_of(R"({"messages": [{"role": "system", "content": "s"}, {"role": "system", "content": "t"}, {"role": "assistant", "content": "a", "prefix": true}]})"), "");
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})",
                  "messages[1]: the last message is an assistant message"));
  EXPECT_EQ(error_of(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "continue_final_message": true})"), "");
  EXPECT_EQ(error_of(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "continue_final_message": true, "add_generation_prompt": false})"), "");
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "continue_final_message": true, "add_generation_prompt": true})",
                  "add_generation_prompt: cannot be true together with continue_final_message"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"}], "continue_final_message": true})",
                  "continue_final_message: requires the last message to be an assistant message without prefix, got user"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "prefix": true}], "continue_final_message": true})",
                  "continue_final_message: requires"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "prefix": true}, {"role": "user", "content": "q"}]})",
                  "messages[1].prefix: only the last message may have prefix: true"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}, {"role": "user", "content": "q"}]})",
                  "messages[1]: an assistant message needs non-empty content or at least one tool call"));
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": []}, {"role": "user", "content": "q"}]})",
                  "messages[1]: an assistant message needs"));
}

TEST(ChatRequestValidate, FunctionNamesAndSchemas) {
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"}], "tools": [{"type": "function", "function": {"name": "get weather"}}]})",
                  "tools[0].function.name: \"get weather\" is not a valid function name"));
  const std::string long_name(65, 'a');
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"}], "tools": [{"type": "function", "function": {"name": ")" + long_name + "\"}}]}",
                  "tools[0].function.name"));
  EXPECT_EQ(error_of(R"({"messages": [{"role": "user", "content": "q"}], "tools": [{"type": "function", "function": {"name": ")" +
                     std::string(64, 'a') + "\"}}]}"), "");
  EXPECT_TRUE(rejected(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f.g"}}], "prefix": true}]})",
                  "messages[1].tool_calls[0].function.name"));
  const auto with_params = [](std::string_view params) {
    return R"({"messages": [{"role": "user", "content": "q"}], "tools": [{"type": "function", "function": {"name": "f", "parameters": )" +
           std::string(params) + "}}]}";
  };
  EXPECT_EQ(error_of(with_params(R"({"type": "object", "properties": {"a": {"type": ["string", "null"], "enum": ["x", null]},
      "b": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1.0}, "c": true,
      "d": {"anyOf": [{"type": "number"}, {"$ref": "#/definitions/x"}]}}, "required": ["a"], "additionalProperties": false,
      "definitions": {"x": {"type": "boolean"}}, "x-custom": [1, 2]})")), "");
  EXPECT_TRUE(rejected(with_params(R"({"type": "strin"})"),
                  "tools[0].function.parameters.type: invalid JSON Schema (draft-07): \"strin\" is not a type"));
  EXPECT_TRUE(rejected(with_params(R"({"type": "object", "properties": {"a": {"type": 5}}})"), "tools[0].function.parameters.properties.a.type"));
  EXPECT_TRUE(rejected(with_params(R"({"properties": []})"), "tools[0].function.parameters.properties: invalid JSON Schema (draft-07): expected an object of schemas"));
  EXPECT_TRUE(rejected(with_params(R"({"properties": {"a": 3}})"), "tools[0].function.parameters.properties.a: invalid JSON Schema (draft-07): a schema must be an object or a boolean"));
  EXPECT_TRUE(rejected(with_params(R"({"required": "a"})"), "tools[0].function.parameters.required"));
  EXPECT_TRUE(rejected(with_params(R"({"required": ["a", "a"]})"), "tools[0].function.parameters.required[1]: invalid JSON Schema (draft-07): duplicate item"));
  EXPECT_TRUE(rejected(with_params(R"({"type": []})"), "tools[0].function.parameters.type"));
  EXPECT_TRUE(rejected(with_params(R"({"minLength": -1})"), "tools[0].function.parameters.minLength"));
  EXPECT_TRUE(rejected(with_params(R"({"maxItems": 1.5})"), "tools[0].function.parameters.maxItems"));
  EXPECT_TRUE(rejected(with_params(R"({"multipleOf": 0})"), "tools[0].function.parameters.multipleOf"));
  EXPECT_TRUE(rejected(with_params(R"({"anyOf": []})"), "tools[0].function.parameters.anyOf"));
  EXPECT_TRUE(rejected(with_params(R"({"items": [{"type": "x"}]})"), "tools[0].function.parameters.items[0].type"));
  EXPECT_TRUE(rejected(with_params(R"({"description": 3})"), "tools[0].function.parameters.description"));
  EXPECT_TRUE(rejected(with_params(R"({"enum": "a"})"), "tools[0].function.parameters.enum"));
}

TEST(ChatRequestValidate, ToolCallPairing) {
  const std::string user = R"({"role": "user", "content": "q"})";
  const auto calls = [](std::string ids_json) {
    return R"({"role": "assistant", "tool_calls": )" + ids_json + "}";
  };
  const auto call = [](std::string_view id) {
    return R"({"id": ")" + std::string(id) + R"(", "function": {"name": "f", "arguments": "{}"}})";
  };
  const auto result = [](std::string_view id) {
    return R"({"role": "tool", "tool_call_id": ")" + std::string(id) + R"(", "content": "r"})";
  };
  const auto body = [](std::initializer_list<std::string> msgs) {
    std::string s = R"({"messages": [)";
    bool first = true;
    for (const std::string& m : msgs) {
      if (!first) s += ", ";
      first = false;
      s += m;
    }
    return s + "]}";
  };
  // Ids are not format-checked in v15.
  EXPECT_EQ(error_of(body({user, calls("[" + call("x") + ", " + call("call/id-1") + "]"), result("call/id-1"), result("x")})), "");
  EXPECT_TRUE(rejected(body({user, calls("[" + call("a") + "]"), result("b")}),
                  "messages[2].tool_call_id: \"b\" matches no tool call of messages[1] (ids: a)"));
  EXPECT_TRUE(rejected(body({user, calls("[" + call("a") + ", " + call("b") + "]"), result("a"), result("a")}),
                  "messages[3].tool_call_id: \"a\" answers a tool call that already has a result"));
  EXPECT_TRUE(rejected(body({user, calls("[" + call("a") + ", " + call("a") + "]"), result("a"), result("a")}),
                  "messages[1].tool_calls[1].id: duplicate id \"a\""));
  EXPECT_TRUE(rejected(body({user, calls("[" + call("a") + ", " + call("b") + "]"), result("a"), R"({"role": "assistant", "content": "x"})", user}),
                  "messages[1].tool_calls: 1 of 2 tool calls have no result before messages[3] (missing ids: b)"));
  EXPECT_TRUE(rejected(body({user, calls("[" + call("a") + "]"), user}),
                  "messages[1].tool_calls: 1 of 1 tool calls have no result before the end of the conversation"));
  EXPECT_TRUE(rejected(body({user, calls("[" + call("null") + "]"), result("null")}), "messages[1].tool_calls[0].id: every tool call needs an id, got \"null\""));
  EXPECT_TRUE(rejected(body({user, calls(R"([{"function": {"name": "f"}}])"), result("")}), "messages[1].tool_calls[0].id"));
  EXPECT_TRUE(rejected(body({user, R"({"role": "assistant", "content": "a"})", result("a")}),
                  "messages[2].tool_call_id: \"a\" answers no tool call"));
  // A trailing assistant with calls and no results is only allowed when it is continued.
  EXPECT_EQ(error_of(R"({"messages": [)" + user + ", " +
                     R"({"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f"}}], "prefix": true}]})"), "");
}

// ---- normalization (§2.5) ----

Message user_msg(Content c) {
  Message m;
  m.role = Role::kUser;
  m.content = std::move(c);
  return m;
}

Message assistant_msg(Content c, std::vector<ToolCall> calls = {}, bool prefix = false) {
  Message m;
  m.role = Role::kAssistant;
  m.content = std::move(c);
  m.tool_calls = std::move(calls);
  m.prefix = prefix;
  return m;
}

Message tool_msg(std::string id, Content c) {
  Message m;
  m.role = Role::kTool;
  m.tool_call_id = std::move(id);
  m.content = std::move(c);
  return m;
}

TEST(ChatNormalize, MergesUserTextAcrossAndWithinMessages) {
  const ImageChunk img{.source = "i", .size = ImageSize{4, 4}};
  const auto out = normalize_messages({
      user_msg("a"),
      user_msg(std::vector<Chunk>{TextChunk{"b"}, TextChunk{""}, TextChunk{"c"}}),
      user_msg(""),
      user_msg(std::vector<Chunk>{TextChunk{"d"}, img, TextChunk{"e"}}),
      user_msg("f"),
  });
  ASSERT_EQ(out.size(), 1u);
  // Different messages join with "\n\n", chunks of one message with "" (v15); the image breaks the run.
  const auto& cs = chunks_of(out[0].content);
  ASSERT_EQ(cs.size(), 3u);
  EXPECT_EQ(std::get<TextChunk>(cs[0]).text, "a\n\nbc\n\nd");
  EXPECT_EQ(std::get<ImageChunk>(cs[1]), img);
  EXPECT_EQ(std::get<TextChunk>(cs[2]).text, "e\n\nf");
}

TEST(ChatNormalize, TextOnlyChunksBecomeAString) {
  const auto out = normalize_messages({user_msg(std::vector<Chunk>{TextChunk{"x"}, TextChunk{"y"}}), user_msg("z")});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(text_of(out[0].content), "xy\n\nz");
  EXPECT_EQ(text_of(normalize_messages({user_msg(std::vector<Chunk>{})})[0].content), "");
}

TEST(ChatNormalize, ImageThenTextAcrossMessagesHasNoSeparator) {
  const ImageChunk img{.source = "i", .size = ImageSize{4, 4}};
  const auto out = normalize_messages({user_msg("a"), user_msg(std::vector<Chunk>{img, TextChunk{"b"}})});
  const auto& cs = chunks_of(out[0].content);
  ASSERT_EQ(cs.size(), 3u);
  EXPECT_EQ(std::get<TextChunk>(cs[0]).text, "a");
  EXPECT_EQ(std::get<TextChunk>(cs[2]).text, "b");
}

TEST(ChatNormalize, MergesAssistantCallsAndPrefixKeepsSystemAndToolApart) {
  Message sys1;
  sys1.role = Role::kSystem;
  sys1.content = std::vector<Chunk>{TextChunk{"s"}, TextChunk{"t"}};
  Message sys2 = sys1;
  sys2.content = std::string("u");
  const auto out = normalize_messages({
      sys1, sys2, user_msg("q"),
      assistant_msg("A", {ToolCall{.id = "1", .name = "f", .arguments = R"({"location":"Paris, France"})"}}),
      assistant_msg(std::vector<Chunk>{ThinkChunk{"t", true}, TextChunk{"B"}},
                    {ToolCall{.id = "2", .name = "g", .arguments = ""}}, /*prefix=*/true),
  });
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(text_of(out[0].content), "st");
  EXPECT_EQ(text_of(out[1].content), "u");
  const Message& a = out[3];
  const auto& cs = chunks_of(a.content);
  ASSERT_EQ(cs.size(), 3u);
  EXPECT_EQ(std::get<TextChunk>(cs[0]).text, "A");
  EXPECT_EQ(std::get<ThinkChunk>(cs[1]).thinking, "t");
  EXPECT_EQ(std::get<TextChunk>(cs[2]).text, "B");
  ASSERT_EQ(a.tool_calls.size(), 2u);
  EXPECT_EQ(a.tool_calls[0].arguments, R"({"location": "Paris, France"})");
  EXPECT_EQ(a.tool_calls[1].arguments, "{}");
  EXPECT_TRUE(a.prefix);
}

TEST(ChatNormalize, ToolResultsFollowCallOrder) {
  const auto out = normalize_messages({
      user_msg("q"),
      assistant_msg("", {ToolCall{.id = "c1", .name = "f", .arguments = "{}"}, ToolCall{.id = "c2", .name = "f", .arguments = "{}"},
                         ToolCall{.id = "c3", .name = "f", .arguments = "{}"}}),
      tool_msg("c3", "r3"), tool_msg("zz", "unknown"), tool_msg("c1", "r1"), tool_msg("c2", "r2"),
  });
  ASSERT_EQ(out.size(), 6u);
  EXPECT_EQ(out[2].tool_call_id, "c1");
  EXPECT_EQ(out[3].tool_call_id, "c2");
  EXPECT_EQ(out[4].tool_call_id, "c3");
  EXPECT_EQ(out[5].tool_call_id, "zz");
  EXPECT_EQ(text_of(out[5].content), "unknown");
}

TEST(ChatNormalize, ToolArguments) {
  EXPECT_EQ(normalize_tool_arguments(""), "{}");
  EXPECT_EQ(normalize_tool_arguments(R"({"location":"Paris, France"})"), R"({"location": "Paris, France"})");
  EXPECT_EQ(normalize_tool_arguments(" {\"a\" :\n[1,2e0, \"\\u00e9\"]} "), "{\"a\": [1, 2.0, \"\xc3\xa9\"]}");
  EXPECT_EQ(normalize_tool_arguments("null"), "null");
  // Not JSON: rendered as a JSON string literal.
  EXPECT_EQ(normalize_tool_arguments("city=Paris \"x\""), R"("city=Paris \"x\"")");
  EXPECT_EQ(normalize_tool_arguments("{bad"), R"("{bad")");
}

}  // namespace
}  // namespace quatre::tokenizer

namespace quatre::tokenizer {
namespace {

// Robustness: random byte edits of a rich request either parse (and then render) or fail with InvalidRequest,
// never with another exception or a memory error (run under ASan/UBSan in the sanitizer build).
TEST(ChatRequestRobustness, RandomEditsParseOrFailCleanly) {
  const std::string base = R"({"messages": [{"role": "system", "content": "S"},
    {"role": "user", "content": [{"type": "text", "text": "a\u00e9"}, {"type": "image_url", "image_url": {"url": "data:image/gif;base64,R0lGODlhAQABAAAAACw="}}]},
    {"role": "assistant", "content": "x", "reasoning_content": "r", "tool_calls": [{"id": "i1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": [1, 2.5e3, null]}"}}]},
    {"role": "tool", "tool_call_id": "i1", "content": [{"type": "text", "text": "res"}]},
    {"role": "assistant", "content": [{"type": "thinking", "thinking": [{"type": "text", "text": "t"}], "closed": false}], "prefix": true}],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "array"}}, "required": ["a"]}}}],
    "reasoning_effort": "high"})";
  ASSERT_NO_THROW(render_chat(parse_chat_request(base), chat_testing::synthetic_tekken()));
  std::mt19937 rng(99);
  const std::string alphabet = "{}[]\":,0123456789.eE-+ \\untrfalsenull\x01\xc3\xa9\xff";
  std::uniform_int_distribution<size_t> pick_char(0, alphabet.size() - 1), n_edits(1, 4), op(0, 2);
  int n_accepted = 0;
  for (int trial = 0; trial < 4000; ++trial) {
    std::string s = base;
    for (size_t e = n_edits(rng); e > 0 && !s.empty(); --e) {
      const size_t at = std::uniform_int_distribution<size_t>(0, s.size() - 1)(rng);
      switch (op(rng)) {
        case 0: s.erase(at, 1); break;
        case 1: s.insert(at, 1, alphabet[pick_char(rng)]); break;
        default: s[at] = alphabet[pick_char(rng)]; break;
      }
    }
    try {
      render_chat(parse_chat_request(s), chat_testing::synthetic_tekken());
      ++n_accepted;
    } catch (const InvalidRequest&) {
    } catch (const std::exception& e) {
      FAIL() << "unexpected " << e.what() << " for: " << s;
    }
  }
  EXPECT_GT(n_accepted, 100);  // the edits are small enough that many requests stay valid
}

}  // namespace
}  // namespace quatre::tokenizer

namespace quatre::tokenizer {
namespace {

TEST(ChatRequestValidate, ChunkKindsOfRequestsBuiltInCode) {
  ChatRequest req;
  Message sys;
  sys.role = Role::kSystem;
  sys.content = std::vector<Chunk>{TextChunk{"s"}, ThinkChunk{"t", true}};
  Message user;
  user.role = Role::kUser;
  user.content = std::string("u");
  req.messages = {sys, user};
  try {
    validate_chat_request(req);
    FAIL() << "no exception";
  } catch (const InvalidRequest& e) {
    EXPECT_STREQ(e.what(), "messages[0].content[1]: thinking chunks are not allowed in system messages");
  }
  req.messages[0].content = std::vector<Chunk>{ImageChunk{.source = "x", .size = std::nullopt}};
  EXPECT_THROW(validate_chat_request(req), InvalidRequest);
  req.messages[0].content = std::string("s");
  EXPECT_NO_THROW(validate_chat_request(req));
}

}  // namespace
}  // namespace quatre::tokenizer
