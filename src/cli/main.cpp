// main() of `quatre`: parses the subcommand, runs it, and turns errors into one clear line and exit code 1.
#include <cstdio>
#include <exception>
#include <map>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"quatre: inference engine and server for Mistral Small 4", "quatre"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "quatre 0.1.0");

  std::map<CLI::App*, quatre::cli::Runner> runners;
  auto add = [&](const char* name, const char* help, quatre::cli::Runner (*make)(CLI::App&)) {
    CLI::App* sub = app.add_subcommand(name, help);
    runners[sub] = make(*sub);
  };
  add("run", "Run one prompt through the model and stream the reply", quatre::cli::add_run);
  add("chat", "Chat with the model in the terminal", quatre::cli::add_chat);
  add("serve", "Serve the model over HTTP (OpenAI- and Mistral-compatible API)", quatre::cli::add_serve);
  add("inspect", "Describe a checkpoint: format, config, tensors, parameters and memory needs", quatre::cli::add_inspect);
  add("gen-model", "Write a synthetic Mistral Small 4 checkpoint (either format, BF16 or FP8)",
      quatre::cli::add_gen_model);
  add("quantize", "Write a 4-bit copy of a BF16 or FP8 checkpoint (quatre_int4: groups of BF16 scales)",
      quatre::cli::add_quantize);
  add("bench", "Decode and prefill throughput next to the roofline (--random-weights: no checkpoint)",
      quatre::cli::add_bench);
  add("tokenize", "Encode text, decode ids, or render a chat request to its prompt", quatre::cli::add_tokenize);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (const auto& [sub, run] : runners) {
      if (sub->parsed()) return run();
    }
  } catch (const quatre::Error& e) {
    std::fprintf(stderr, "quatre: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "quatre: internal error: %s\n", e.what());
    return 2;
  }
  return 1;
}
