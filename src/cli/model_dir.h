// Where a command finds its model: --model DIR, else the built-in default model directory. Wiring only.
#pragma once

#include <filesystem>
#include <string>

#include "tokenizer/tekken.h"

namespace quatre::cli {

// The default model: the small trained demo model of assets/demo-model (issue #12), which
// scripts/make_default_model.sh lays out here with its tekken.json (scripts/start.sh runs it).
inline constexpr const char* kDefaultModelDir = "models/default";
// Printed on stderr whenever a command falls back to the default model.
inline constexpr const char* kDefaultModelNotice =
    "quatre: no --model given: using ./models/default, a small DEMO model (11M parameters of the Mistral Small 4 "
    "architecture trained for 85 seconds; English-like text only, see assets/demo-model/README.md)";

// `arg` when given; else the default model directory when it exists (printing kDefaultModelNotice on stderr);
// else InvalidRequest saying how to get one.
std::filesystem::path resolve_model_dir(const std::string& arg);
// DIR/tekken.json, checked against the model's vocabulary size. LoadError when absent or inconsistent.
tokenizer::Tekken load_model_tokenizer(const std::filesystem::path& dir, int64_t model_vocab_size);

}  // namespace quatre::cli
