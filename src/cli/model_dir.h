// Where a command finds its model: --model DIR, else the built-in default model directory. Wiring only.
#pragma once

#include <filesystem>
#include <string>

#include "tokenizer/tekken.h"

namespace quatre::cli {

// The default model: a small checkpoint of the exact architecture that scripts/start.sh writes on first use.
inline constexpr const char* kDefaultModelDir = "models/default";

// `arg` when given; else the default model directory when it exists; else InvalidRequest saying how to get one.
std::filesystem::path resolve_model_dir(const std::string& arg);
// DIR/tekken.json, checked against the model's vocabulary size. LoadError when absent or inconsistent.
tokenizer::Tekken load_model_tokenizer(const std::filesystem::path& dir, int64_t model_vocab_size);

}  // namespace quatre::cli
