// The subcommands of `quatre`: each registers its options on the app and returns the function that runs it.
// Depends on CLI11 and the libraries each command wires together.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

namespace quatre::cli {

using Runner = std::function<int()>;

Runner add_inspect(CLI::App& app);
Runner add_gen_model(CLI::App& app);
Runner add_quantize(CLI::App& app);
Runner add_tokenize(CLI::App& app);
Runner add_run(CLI::App& app);
Runner add_serve(CLI::App& app);
Runner add_chat(CLI::App& app);
Runner add_bench(CLI::App& app);

}  // namespace quatre::cli
