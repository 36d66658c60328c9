// Runs the `quatre` binary of this build for the CLI tests.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace quatre::cli::test {

struct Result {
  int exit_code = -1;
  std::string out;  // stdout, and stderr too unless the run asked for stdout only
};

// Runs `quatre ARGS` through the shell.
inline Result run_quatre(const std::string& args, bool is_stdout_only = false) {
  const std::string cmd = std::string(QUATRE_BINARY_DIR) + "/quatre " + args + (is_stdout_only ? " 2>/dev/null" : " 2>&1");
  Result r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return r;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) r.out.append(buffer, n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace quatre::cli::test
