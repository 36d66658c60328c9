// `quatre tokenize`: encode text, decode ids, or render a chat-completions request to its prompt ids and text
// form, with a tekken.json (--tokenizer FILE, or --model DIR for DIR/tekken.json). Wiring only.
#include <charconv>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cli/commands.h"
#include "core/error.h"
#include "tokenizer/chat_render.h"
#include "tokenizer/tekken.h"

namespace quatre::cli {
namespace {

struct TokenizeArgs {
  std::string tokenizer;
  std::string model_dir;
  std::string text;
  std::string decode;
  std::string chat;
  bool is_skip_special = false;
};

std::filesystem::path tokenizer_path(const TokenizeArgs& a) {
  if (!a.tokenizer.empty()) return a.tokenizer;
  if (a.model_dir.empty()) throw InvalidRequest("tokenize: give --tokenizer FILE or --model DIR");
  const std::filesystem::path p = std::filesystem::path(a.model_dir) / "tekken.json";
  if (!std::filesystem::exists(p)) throw LoadError(fmt::format("{}: no tekken.json in the model directory", p.string()));
  return p;
}

// "1,2, 3" or "[1, 2, 3]" -> ids.
std::vector<tokenizer::TokenId> parse_ids(std::string_view s) {
  std::vector<tokenizer::TokenId> ids;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c == ',' || c == ' ' || c == '[' || c == ']' || c == '\n' || c == '\t') {
      ++i;
      continue;
    }
    tokenizer::TokenId id = 0;
    auto [end, ec] = std::from_chars(s.data() + i, s.data() + s.size(), id);
    if (ec != std::errc()) {
      throw InvalidRequest(fmt::format("--decode: '{}' at offset {} is not a token id; expected e.g. 1,2,3",
                                       s.substr(i, 12), i));
    }
    ids.push_back(id);
    i = static_cast<size_t>(end - s.data());
  }
  return ids;
}

std::string read_file_or_stdin(const std::string& path) {
  if (path == "-") return std::string(std::istreambuf_iterator<char>(std::cin), {});
  std::ifstream in(path, std::ios::binary);
  if (!in) throw LoadError(fmt::format("{}: cannot open the chat request", path));
  return std::string(std::istreambuf_iterator<char>(in), {});
}

int run_tokenize(const TokenizeArgs& a) {
  const int n_modes = !a.text.empty() + !a.decode.empty() + !a.chat.empty();
  if (n_modes != 1) throw InvalidRequest("tokenize: give exactly one of TEXT, --decode IDS or --chat REQUEST.json");
  const tokenizer::Tekken tekken = tokenizer::Tekken::load(tokenizer_path(a));
  if (!a.text.empty()) {
    fmt::print("{}\n", fmt::join(tekken.encode(a.text), ","));
  } else if (!a.decode.empty()) {
    const auto policy = a.is_skip_special ? tokenizer::SpecialTokenPolicy::kIgnore : tokenizer::SpecialTokenPolicy::kKeep;
    fmt::print("{}\n", tekken.decode(parse_ids(a.decode), policy));
  } else {
    const tokenizer::RenderedPrompt p = tokenizer::render_chat(tokenizer::parse_chat_request(read_file_or_stdin(a.chat)), tekken);
    fmt::print("{}\n{}\n", fmt::join(p.ids, ","), p.text);
    fmt::print(stderr, "{} tokens, {} image(s)\n", p.ids.size(), p.images.size());
  }
  return 0;
}

}  // namespace

Runner add_tokenize(CLI::App& app) {
  auto a = std::make_shared<TokenizeArgs>();
  auto* tok = app.add_option("--tokenizer", a->tokenizer, "tekken.json to use");
  auto* model = app.add_option("--model", a->model_dir, "Model directory holding tekken.json");
  tok->excludes(model);
  app.add_option("text", a->text, "Text to encode (prints comma-separated ids)");
  app.add_option("--decode", a->decode, "Comma-separated ids to decode (special tokens shown by name)");
  app.add_option("--chat", a->chat, "Chat-completions request JSON file ('-' for stdin): prints the prompt ids, then "
                                    "its text form");
  app.add_flag("--skip-special", a->is_skip_special, "With --decode: drop special tokens instead of naming them");
  return [a] { return run_tokenize(*a); };
}

}  // namespace quatre::cli
