// quatre-bench: `quatre bench` as a binary of its own that links only the model, the vision tower and the backends
// (no server), quick to build and carry to a GPU host. Same options as `quatre bench`.
#include <cstdio>
#include <exception>

#include <CLI/CLI.hpp>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"quatre bench: decode and prefill throughput next to the roofline"};
  const quatre::cli::Runner run = quatre::cli::add_bench(app);
  CLI11_PARSE(app, argc, argv);
  try {
    return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
