// `quatre tokenize` as a user meets it: encode, decode, chat rendering, --model lookup and one-line errors.
// Uses the real-vocabulary tekken.json that the test build writes (tests/tokenizer/tekken_tests.cmake).
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "cli_test_util.h"

namespace {

namespace fs = std::filesystem;

using quatre::cli::test::Result;

// Runs `quatre tokenize ARGS`.
Result run(const std::string& args, bool is_stdout_only = false) {
  return quatre::cli::test::run_quatre("tokenize " + args, is_stdout_only);
}

class CliTokenize : public testing::Test {
 protected:
  void SetUp() override {
    tekken_ = fs::path(QUATRE_BINARY_DIR) / "tests" / "tokenizer" / "data" / "tekken.json";
    if (!fs::exists(tekken_)) GTEST_SKIP() << tekken_ << " not present (the test build writes it)";
    dir_ = fs::temp_directory_path() / ("quatre_cli_tokenize_" + std::to_string(::getpid()) + "_" +
                                        testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string tok() const { return "--tokenizer " + tekken_.string(); }
  fs::path tekken_;
  fs::path dir_;
};

TEST_F(CliTokenize, EncodesTheGroundTruthOfProtocolSection15) {
  const Result r = run(tok() + " 'Hello, how are you?'");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.out, "22177,1044,2606,1584,1636,1063\n");
}

TEST_F(CliTokenize, DecodesWithSpecialNamesOrWithoutThem) {
  EXPECT_EQ(run(tok() + " --decode 1,3,22177,4").out, "<s>[INST]Hello[/INST]\n");
  EXPECT_EQ(run(tok() + " --decode '[1, 3, 22177, 4]' --skip-special").out, "Hello\n");
}

TEST_F(CliTokenize, RendersAChatRequestFoundThroughModelDir) {
  fs::copy_file(tekken_, dir_ / "tekken.json");
  std::ofstream(dir_ / "req.json") << R"({"messages": [{"role": "user", "content": "Solve 2+2."},
      {"role": "assistant", "content": "The answer is 4.", "reasoning_content": "2+2 is 4."},
      {"role": "user", "content": "Thanks"}], "reasoning_effort": "high"})";
  const Result r = run("--model " + dir_.string() + " --chat " + (dir_ / "req.json").string(), /*is_stdout_only=*/true);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  const size_t newline = r.out.find('\n');
  ASSERT_NE(newline, std::string::npos) << r.out;
  EXPECT_TRUE(r.out.starts_with("1,36,")) << r.out;
  EXPECT_EQ(r.out.substr(newline + 1),
            "<s>[MODEL_SETTINGS]{\"reasoning_effort\": \"high\"}[/MODEL_SETTINGS][INST]Solve 2+2.[/INST][THINK]2+2 is "
            "4.[/THINK]The answer is 4.</s>[INST]Thanks[/INST]\n");
}

TEST_F(CliTokenize, ErrorsAreOneLineAndExitOne) {
  std::ofstream(dir_ / "bad.json") << R"({"messages": [{"role": "user", "content": "q"}], "reasoning_effort": "low"})";
  Result r = run(tok() + " --chat " + (dir_ / "bad.json").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "quatre: error: reasoning_effort should be one of ['none', 'high'], got low.\n");
  r = run(tok());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("give exactly one of TEXT, --decode IDS or --chat"), std::string::npos) << r.out;
  r = run("--model " + dir_.string() + " x");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("no tekken.json in the model directory"), std::string::npos) << r.out;
  r = run(tok() + " --decode 1,x");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("--decode: 'x'"), std::string::npos) << r.out;
}

}  // namespace
