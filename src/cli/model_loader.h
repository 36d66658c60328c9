// The options every model-running command shares (--model, --format, --device, --softmax-scale) and the objects
// they load, in dependency order: checkpoint -> tokenizer -> backend -> weights -> model. Wiring only.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "core/backend.h"
#include "io/checkpoint.h"
#include "model/text_model.h"
#include "model/text_weights.h"
#include "tokenizer/tekken.h"

namespace quatre::cli {

struct ModelOptions {
  std::string model_dir;  // empty: the built-in default model
  std::string format;     // "", "hf" or "native"
  std::string device = "cpu";
  std::string softmax_scale = "release";
};
void add_model_options(CLI::App& app, ModelOptions& options);

// Members refer to each other (the model to the weights and backend, the weights to the mapped checkpoint): it
// is neither copied nor moved; hold it by unique_ptr.
struct LoadedModel {
  explicit LoadedModel(const ModelOptions& options);
  LoadedModel(const LoadedModel&) = delete;
  LoadedModel& operator=(const LoadedModel&) = delete;

  const std::filesystem::path dir;
  const io::Checkpoint checkpoint;
  const tokenizer::Tekken tekken;
  const std::unique_ptr<Backend> backend;
  const model::TextWeights weights;
  const model::TextModel model;
};

}  // namespace quatre::cli
