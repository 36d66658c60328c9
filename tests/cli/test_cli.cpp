// The `quatre` binary as a user meets it: --help everywhere, one-line errors with a non-zero exit, and
// gen-model + inspect round trips in both formats.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "cli_test_util.h"

namespace {

namespace fs = std::filesystem;

using quatre::cli::test::Result;

Result run(const std::string& args, bool stdout_only = false) { return quatre::cli::test::run_quatre(args, stdout_only); }

int count_lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

class Cli : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("quatre_cli_" + std::to_string(::getpid()) + "_" +
                                        testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(Cli, HelpForEveryCommand) {
  const Result top = run("--help");
  EXPECT_EQ(top.exit_code, 0);
  EXPECT_NE(top.out.find("inspect"), std::string::npos);
  EXPECT_NE(top.out.find("gen-model"), std::string::npos);
  for (const char* sub : {"inspect", "gen-model", "run", "tokenize"}) {
    const Result r = run(std::string(sub) + " --help");
    EXPECT_EQ(r.exit_code, 0) << sub;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << r.out;
  }
}

TEST_F(Cli, BadUsageIsAnErrorNotACrash) {
  EXPECT_NE(run("").exit_code, 0);
  EXPECT_NE(run("frobnicate").exit_code, 0);
  EXPECT_NE(run("gen-model " + (dir_ / "x").string() + " --preset bogus").exit_code, 0);
  EXPECT_NE(run("inspect --context -5 --preset tiny").exit_code, 0);
}

TEST_F(Cli, MissingCheckpointIsOneClearLine) {
  const Result r = run("inspect " + (dir_ / "nope").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(count_lines(r.out), 1) << r.out;
  EXPECT_EQ(r.out.rfind("quatre: error: ", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("nope"), std::string::npos) << r.out;
}

TEST_F(Cli, GenModelThenInspectInBothFormats) {
  for (const std::string format : {"hf", "native"}) {
    for (const std::string dtype : {"bf16", "fp8"}) {
      const fs::path out = dir_ / (format + dtype);
      const Result gen = run("gen-model " + out.string() + " --preset tiny --format " + format + " --dtype " + dtype);
      ASSERT_EQ(gen.exit_code, 0) << gen.out;
      const Result info = run("inspect " + out.string());
      ASSERT_EQ(info.exit_code, 0) << info.out;
      EXPECT_NE(info.out.find(format == "hf" ? "huggingface (Mistral3ForConditionalGeneration" : "mistral-native"), std::string::npos)
          << info.out;
      EXPECT_NE(info.out.find(dtype == "fp8" ? "fp8 e4m3, per-tensor, static" : "quantization none"), std::string::npos) << info.out;
      EXPECT_NE(info.out.find("parameters   413.73K total"), std::string::npos) << info.out;
      EXPECT_EQ(info.out.find("warning"), std::string::npos) << info.out;
    }
  }
}

TEST_F(Cli, InspectThePresetOfTheRealModel) {
  const Result r = run("inspect --preset mistral-small-4");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("119.40B total"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("6.63B active per token"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("22.5 KiB per token"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("112.62 GiB"), std::string::npos) << r.out;
}

TEST_F(Cli, TruncatedShardIsOneLineNamingTheFile) {
  const fs::path out = dir_ / "m";
  ASSERT_EQ(run("gen-model " + out.string() + " --preset tiny").exit_code, 0);
  fs::resize_file(out / "model.safetensors", fs::file_size(out / "model.safetensors") / 2);
  const Result r = run("inspect " + out.string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(count_lines(r.out), 1) << r.out;
  EXPECT_NE(r.out.find("model.safetensors"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("truncated"), std::string::npos) << r.out;
}

// Only stdout (the reply), for comparing two runs.
std::string run_stdout(const std::string& args) {
  return run(args, /*stdout_only=*/true).out;
}

TEST_F(Cli, RunStreamsAReplyAndReportsSpeed) {
  const fs::path m = dir_ / "m";
  ASSERT_EQ(run("gen-model " + m.string() + " --preset tiny --format native --dtype fp8 --seed 3").exit_code, 0);
  const std::string args = "run --model " + m.string() + " -p \"Hello, who are you?\" --temperature 0 -n 12";
  const Result r = run(args);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("prompt tokens in"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("12 generated in"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("finish: length"), std::string::npos) << r.out;
  // Greedy is deterministic; a seeded sample too; the raw (no chat template) prompt differs.
  EXPECT_EQ(run_stdout(args), run_stdout(args));
  const std::string sampled = "run --model " + m.string() + " -p hi --temperature 1 --seed 5 -n 16";
  EXPECT_EQ(run_stdout(sampled), run_stdout(sampled));
  const Result shown = run(args + " --show-prompt");
  EXPECT_NE(shown.out.find("prompt: <s>[MODEL_SETTINGS]{\"reasoning_effort\": \"none\"}[/MODEL_SETTINGS][INST]Hello, who are you?[/INST]"),
            std::string::npos)
      << shown.out;
  EXPECT_EQ(run("run --model " + m.string() + " -p hi --raw -n 3 --temperature 0").exit_code, 0);
}

TEST_F(Cli, RunRejectsBadInputWithOneLine) {
  const fs::path m = dir_ / "m";
  ASSERT_EQ(run("gen-model " + m.string() + " --preset tiny").exit_code, 0);
  const Result effort = run("run --model " + m.string() + " -p hi --reasoning-effort medium");
  EXPECT_EQ(effort.exit_code, 1);
  EXPECT_NE(effort.out.find("reasoning_effort"), std::string::npos) << effort.out;
  const Result not_a_model = run("run --model " + dir_.string() + " -p hi");
  EXPECT_EQ(not_a_model.exit_code, 1);
  EXPECT_EQ(count_lines(not_a_model.out), 1) << not_a_model.out;
  EXPECT_NE(not_a_model.out.find("not a Mistral Small 4 checkpoint"), std::string::npos) << not_a_model.out;
  const Result top_p = run("run --model " + m.string() + " -p hi --top-p 3");
  EXPECT_EQ(top_p.exit_code, 1);
  EXPECT_NE(top_p.out.find("top_p"), std::string::npos) << top_p.out;
}

}  // namespace
