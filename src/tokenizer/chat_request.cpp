// Reads a chat-completions request JSON into the typed ChatRequest (PROTOCOL §2.3, §4.2 fields that shape the
// prompt). Type and per-role chunk checks live here; cross-message rules are in chat_validate.cpp.
// Depends on core and json_value only.
#include <fmt/format.h>

#include "core/error.h"
#include "tokenizer/chat_request.h"

namespace quatre::tokenizer {

const char* role_name(Role role) {
  switch (role) {
    case Role::kSystem: return "system";
    case Role::kUser: return "user";
    case Role::kAssistant: return "assistant";
    case Role::kTool: return "tool";
  }
  return "?";
}

namespace {

[[noreturn]] void fail(std::string_view path, std::string_view problem) {
  throw InvalidRequest(fmt::format("{}: {}", path, problem));
}

// A short, printable form of a value for error messages.
std::string shown(const JsonValue& v) {
  std::string s = dump_json(v);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

[[noreturn]] void wrong_type(std::string_view path, std::string_view expected, const JsonValue& got) {
  fail(path, fmt::format("expected {}, got {} {}", expected, got.type_name(), shown(got)));
}

const std::string& get_string(const JsonValue& v, std::string_view path) {
  if (!v.is_string()) wrong_type(path, "a string", v);
  return v.as_string();
}

// An optional field: nullptr when absent or null.
const JsonValue* get_optional(const JsonValue& obj, std::string_view key) {
  const JsonValue* v = obj.find(key);
  return (v == nullptr || v->is_null()) ? nullptr : v;
}

// `path` is the object's path ("" for the request body itself).
bool get_optional_bool(const JsonValue& obj, std::string_view key, std::string_view path, bool fallback) {
  const JsonValue* v = get_optional(obj, key);
  if (v == nullptr) return fallback;
  if (!v->is_bool()) wrong_type(path.empty() ? std::string(key) : fmt::format("{}.{}", path, key), "a boolean", *v);
  return v->as_bool();
}

// `{"type":"thinking","thinking": "..." | [{"type":"text","text":"..."}, ...], "closed": bool}`
ThinkChunk read_think_chunk(const JsonValue& c, const std::string& path) {
  const JsonValue* thinking = c.find("thinking");
  if (thinking == nullptr) fail(path + ".thinking", "is required for a thinking chunk");
  ThinkChunk chunk;
  if (thinking->is_string()) {
    chunk.thinking = thinking->as_string();
  } else if (thinking->is_array()) {
    // Mistral API form: a list of text chunks, joined with "".
    const auto& parts = thinking->as_array();
    for (size_t i = 0; i < parts.size(); ++i) {
      const std::string part_path = fmt::format("{}.thinking[{}]", path, i);
      if (!parts[i].is_object()) wrong_type(part_path, "a text chunk object", parts[i]);
      const JsonValue* type = parts[i].find("type");
      if (type == nullptr || !type->is_string() || type->as_string() != "text") {
        fail(part_path + ".type", "thinking content must be text chunks ({\"type\": \"text\", ...})");
      }
      const JsonValue* text = parts[i].find("text");
      if (text == nullptr) fail(part_path + ".text", "is required");
      chunk.thinking += get_string(*text, part_path + ".text");
    }
  } else {
    wrong_type(path + ".thinking", "a string or a list of text chunks", *thinking);
  }
  chunk.closed = get_optional_bool(c, "closed", path, true);
  return chunk;
}

ImageChunk read_image_chunk(const JsonValue& c, const std::string& path, const std::string& type) {
  if (type == "image") {  // {"type":"image","image":"<base64 or data URL>"}
    const JsonValue* image = c.find("image");
    if (image == nullptr) fail(path + ".image", "is required for an image chunk");
    return ImageChunk{.source = get_string(*image, path + ".image"), .size = std::nullopt};
  }
  // {"type":"image_url","image_url": "<url>" | {"url": "<url>", "detail": ...}}
  const JsonValue* image_url = c.find("image_url");
  if (image_url == nullptr) fail(path + ".image_url", "is required for an image_url chunk");
  if (image_url->is_string()) return ImageChunk{.source = image_url->as_string(), .size = std::nullopt};
  if (!image_url->is_object()) wrong_type(path + ".image_url", "a URL string or an object with \"url\"", *image_url);
  const JsonValue* url = image_url->find("url");
  if (url == nullptr) fail(path + ".image_url.url", "is required");
  return ImageChunk{.source = get_string(*url, path + ".image_url.url"), .size = std::nullopt};
}

Chunk read_chunk(const JsonValue& c, const std::string& path, Role role) {
  if (!c.is_object()) wrong_type(path, "a content chunk object", c);
  const JsonValue* type_value = c.find("type");
  if (type_value == nullptr) fail(path + ".type", "is required");
  const std::string& type = get_string(*type_value, path + ".type");
  const auto not_allowed = [&](std::string_view what) {
    fail(path, fmt::format("{} chunks are not allowed in {} messages", what, role_name(role)));
  };
  if (type == "text") {
    const JsonValue* text = c.find("text");
    if (text == nullptr) fail(path + ".text", "is required for a text chunk");
    return TextChunk{get_string(*text, path + ".text")};
  }
  if (type == "image_url" || type == "image") {
    if (role != Role::kUser && role != Role::kTool) not_allowed("image");
    return read_image_chunk(c, path, type);
  }
  if (type == "thinking") {
    if (role != Role::kAssistant) not_allowed("thinking");
    return read_think_chunk(c, path);
  }
  if (type == "input_audio" || type == "audio_url") {
    fail(path + ".type", fmt::format("\"{}\": audio input is not supported by this model", type));
  }
  fail(path + ".type", fmt::format("unknown chunk type \"{}\"; expected text, image_url, image or thinking", type));
}

Content read_content(const JsonValue& msg, const std::string& path, Role role, bool is_required) {
  const JsonValue* content = get_optional(msg, "content");
  if (content == nullptr) {
    if (is_required) fail(path + ".content", fmt::format("is required for {} messages", role_name(role)));
    return std::string();
  }
  if (content->is_string()) return content->as_string();
  if (!content->is_array()) wrong_type(path + ".content", "a string or an array of content chunks", *content);
  std::vector<Chunk> chunks;
  const auto& items = content->as_array();
  for (size_t i = 0; i < items.size(); ++i) {
    chunks.push_back(read_chunk(items[i], fmt::format("{}.content[{}]", path, i), role));
  }
  return chunks;
}

ToolCall read_tool_call(const JsonValue& c, const std::string& path) {
  if (!c.is_object()) wrong_type(path, "a tool call object", c);
  ToolCall call;
  if (const JsonValue* id = get_optional(c, "id")) call.id = get_string(*id, path + ".id");
  if (const JsonValue* type = get_optional(c, "type")) {
    if (get_string(*type, path + ".type") != "function") {
      fail(path + ".type", fmt::format("unsupported tool call type \"{}\"; expected \"function\"", type->as_string()));
    }
  }
  const JsonValue* function = c.find("function");
  if (function == nullptr) fail(path + ".function", "is required");
  if (!function->is_object()) wrong_type(path + ".function", "an object", *function);
  const JsonValue* name = function->find("name");
  if (name == nullptr) fail(path + ".function.name", "is required");
  call.name = get_string(*name, path + ".function.name");
  if (const JsonValue* args = get_optional(*function, "arguments")) {
    if (args->is_string()) {
      call.arguments = args->as_string();
    } else if (args->is_object()) {
      call.arguments = dump_json(*args);  // Mistral accepts an object; serialized first (§2.5.4)
    } else {
      wrong_type(path + ".function.arguments", "a JSON string or an object", *args);
    }
  }
  return call;
}

// reasoning_content / reasoning (vLLM, DeepSeek) become a leading closed thinking chunk (§2.3).
void apply_reasoning_field(const JsonValue& msg, const std::string& path, Message& m) {
  const JsonValue* rc = get_optional(msg, "reasoning_content");
  const JsonValue* r = get_optional(msg, "reasoning");
  if (rc == nullptr && r == nullptr) return;
  const std::string* text = nullptr;
  if (rc != nullptr) text = &get_string(*rc, path + ".reasoning_content");
  if (r != nullptr) {
    const std::string& other = get_string(*r, path + ".reasoning");
    if (text != nullptr && *text != other) {
      fail(path + ".reasoning", "differs from reasoning_content; send one of them (or both with the same value)");
    }
    text = &other;
  }
  std::vector<Chunk> chunks{ThinkChunk{.thinking = *text, .closed = true}};
  if (auto* s = std::get_if<std::string>(&m.content)) {
    chunks.emplace_back(TextChunk{*s});
  } else {
    for (Chunk& c : std::get<std::vector<Chunk>>(m.content)) {
      if (std::holds_alternative<ThinkChunk>(c)) {
        fail(path + ".content", "has thinking chunks and the message also sets reasoning_content/reasoning; use one");
      }
      chunks.push_back(std::move(c));
    }
  }
  m.content = std::move(chunks);
}

Message read_message(const JsonValue& msg, const std::string& path) {
  if (!msg.is_object()) wrong_type(path, "a message object", msg);
  const JsonValue* role_value = msg.find("role");
  if (role_value == nullptr) fail(path + ".role", "is required");
  const std::string& role = get_string(*role_value, path + ".role");
  Message m;
  if (role == "system" || role == "developer") {
    m.role = Role::kSystem;
  } else if (role == "user") {
    m.role = Role::kUser;
  } else if (role == "assistant") {
    m.role = Role::kAssistant;
  } else if (role == "tool") {
    m.role = Role::kTool;
  } else {
    fail(path + ".role", fmt::format("unknown role \"{}\"; expected system, developer, user, assistant or tool", role));
  }
  m.content = read_content(msg, path, m.role, /*is_required=*/m.role != Role::kAssistant);
  if (m.role == Role::kAssistant) {
    if (const JsonValue* calls = get_optional(msg, "tool_calls")) {
      if (!calls->is_array()) wrong_type(path + ".tool_calls", "an array", *calls);
      for (size_t i = 0; i < calls->as_array().size(); ++i) {
        m.tool_calls.push_back(read_tool_call(calls->as_array()[i], fmt::format("{}.tool_calls[{}]", path, i)));
      }
    }
    m.prefix = get_optional_bool(msg, "prefix", path, false);
    apply_reasoning_field(msg, path, m);
  }
  if (m.role == Role::kTool) {
    const JsonValue* id = get_optional(msg, "tool_call_id");
    if (id == nullptr) fail(path + ".tool_call_id", "is required for tool messages");
    m.tool_call_id = get_string(*id, path + ".tool_call_id");
    if (const JsonValue* name = get_optional(msg, "name")) m.name = get_string(*name, path + ".name");
  }
  return m;
}

Tool read_tool(const JsonValue& t, const std::string& path) {
  if (!t.is_object()) wrong_type(path, "a tool object", t);
  const JsonValue* type = t.find("type");
  if (type != nullptr && !type->is_null() && get_string(*type, path + ".type") != "function") {
    fail(path + ".type", fmt::format("unsupported tool type \"{}\"; only \"function\" tools are supported",
                                     type->as_string()));
  }
  const JsonValue* function = t.find("function");
  if (function == nullptr) fail(path + ".function", "is required");
  if (!function->is_object()) wrong_type(path + ".function", "an object", *function);
  Tool tool;
  const JsonValue* name = function->find("name");
  if (name == nullptr) fail(path + ".function.name", "is required");
  tool.name = get_string(*name, path + ".function.name");
  if (const JsonValue* d = get_optional(*function, "description")) {
    tool.description = get_string(*d, path + ".function.description");
  }
  tool.parameters = JsonValue::object();
  if (const JsonValue* p = get_optional(*function, "parameters")) {
    if (!p->is_object()) wrong_type(path + ".function.parameters", "a JSON Schema object", *p);
    tool.parameters = *p;
  }
  return tool;
}

}  // namespace

ChatRequest parse_chat_request(const JsonValue& body) {
  if (!body.is_object()) wrong_type("request body", "a JSON object", body);
  for (const char* key : {"chat_template", "chat_template_kwargs"}) {
    if (get_optional(body, key) != nullptr) fail(key, "chat_template is not supported for Mistral tokenizers");
  }
  if (const JsonValue* mode = get_optional(body, "prompt_mode")) {
    fail("prompt_mode", fmt::format("got {}: Reasoning prompt mode is not enabled for this model", shown(*mode)));
  }
  ChatRequest req;
  const JsonValue* messages = body.find("messages");
  if (messages == nullptr || messages->is_null()) fail("messages", "is required");
  if (!messages->is_array()) wrong_type("messages", "an array of messages", *messages);
  for (size_t i = 0; i < messages->as_array().size(); ++i) {
    req.messages.push_back(read_message(messages->as_array()[i], fmt::format("messages[{}]", i)));
  }
  if (const JsonValue* tools = get_optional(body, "tools")) {
    if (!tools->is_array()) wrong_type("tools", "an array of tools", *tools);
    for (size_t i = 0; i < tools->as_array().size(); ++i) {
      req.tools.push_back(read_tool(tools->as_array()[i], fmt::format("tools[{}]", i)));
    }
  }
  if (const JsonValue* effort = get_optional(body, "reasoning_effort")) {
    req.reasoning_effort = get_string(*effort, "reasoning_effort");
  }
  req.continue_final_message = get_optional_bool(body, "continue_final_message", "", false);
  // add_generation_prompt defaults to true; only an explicit true conflicts with continue_final_message.
  const JsonValue* agp = get_optional(body, "add_generation_prompt");
  if (agp != nullptr && !agp->is_bool()) wrong_type("add_generation_prompt", "a boolean", *agp);
  if (req.continue_final_message && agp != nullptr && agp->as_bool()) {
    fail("add_generation_prompt", "cannot be true together with continue_final_message");
  }
  validate_chat_request(req);
  // After validation, so that error messages index the client's messages.
  if (get_optional_bool(body, "safe_prompt", "", false)) {
    Message safe;
    safe.role = Role::kSystem;
    safe.content = std::string(kSafePrompt);
    req.messages.insert(req.messages.begin(), std::move(safe));
  }
  return req;
}

ChatRequest parse_chat_request(std::string_view body_json) {
  return parse_chat_request(parse_json(body_json, "request body"));
}

}  // namespace quatre::tokenizer
