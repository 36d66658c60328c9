// Model directory resolution and its tokenizer.
#include "cli/model_dir.h"

#include <cstdio>

#include <fmt/format.h>

#include "core/error.h"

namespace quatre::cli {

std::filesystem::path resolve_model_dir(const std::string& arg) {
  if (!arg.empty()) return arg;
  if (std::filesystem::is_directory(kDefaultModelDir)) {
    fmt::print(stderr, "{}\n", kDefaultModelNotice);
    return kDefaultModelDir;
  }
  throw InvalidRequest(fmt::format(
      "no --model given and no default model in ./{} (scripts/make_default_model.sh lays out the demo model there)",
      kDefaultModelDir));
}

tokenizer::Tekken load_model_tokenizer(const std::filesystem::path& dir, int64_t model_vocab_size) {
  const std::filesystem::path path = dir / "tekken.json";
  if (!std::filesystem::exists(path)) throw LoadError(fmt::format("{}: no tekken.json in the model directory", path.string()));
  tokenizer::Tekken tekken = tokenizer::Tekken::load(path);
  if (tekken.vocab_size() > model_vocab_size) {
    throw LoadError(fmt::format("{}: the tokenizer has {} ids but the model's vocabulary has {}", path.string(),
                                tekken.vocab_size(), model_vocab_size));
  }
  return tekken;
}

}  // namespace quatre::cli
