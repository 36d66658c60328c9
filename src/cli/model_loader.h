// The options every model-running command shares (--model, --format, --device, --softmax-scale) and the objects
// they load, in dependency order: checkpoint -> tokenizer -> backend -> weights -> model. Wiring only.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "core/backend.h"
#include "io/checkpoint.h"
#include "model/text_model.h"
#include "model/text_weights.h"
#include "parallel/tensor_parallel.h"
#include "tokenizer/tekken.h"

namespace quatre::cli {

struct ModelOptions {
  std::string model_dir;  // empty: the built-in default model
  std::string format;     // "", "hf" or "native"
  std::string device = "cpu";
  std::string softmax_scale = "release";
  int tensor_parallel_size = 1;  // ranks, one thread (and on cuda one GPU) each: parallel::TensorParallelGroup
  std::string fp8_activations = "auto";  // auto, none (W8A16) or static (W8A8): model::Fp8Activations
  std::string attention_operands = "auto";  // auto, fp32 or bf16: model::AttentionOperands
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
  // One device: its backend, weights and model. --tensor-parallel-size N > 1: the group of N ranks, each with its
  // own backend and slice of the weights; `model` is rank 0's, which drives the others.
  const std::unique_ptr<Backend> own_backend;         // null with N > 1
  const std::optional<model::TextWeights> weights;    // empty with N > 1
  const std::unique_ptr<parallel::TensorParallelGroup> group;  // null with N = 1
  Backend* const backend;                             // rank 0's with N > 1
  const std::optional<model::TextModel> single;       // empty with N > 1
  const model::TextModel& model;
};

}  // namespace quatre::cli
