// `quatre quantize` as a user meets it: the tiny checkpoints of both formats, BF16 and FP8, quantised and then run
// with `quatre run` (greedy, text and chat), inspected, and bad options refused in one line.
#include <unistd.h>

#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "cli_test_util.h"

namespace {

namespace fs = std::filesystem;
using quatre::cli::test::Result;
using quatre::cli::test::run_quatre;

class CliQuantize : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("quatre_cli_quantize_" + std::to_string(::getpid()) + "_" +
                                        testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(CliQuantize, EveryFormatAndDtypeQuantisesAndRuns) {
  for (const char* format : {"hf", "native"}) {
    for (const char* dtype : {"bf16", "fp8"}) {
      const std::string src = path(std::string("src-") + format + "-" + dtype), q = src + "-q";
      ASSERT_EQ(run_quatre("gen-model " + src + " --preset tiny --format " + format + " --dtype " + dtype).exit_code, 0);
      const Result quantize = run_quatre("quantize " + src + " " + q + " --group-size 32");
      ASSERT_EQ(quantize.exit_code, 0) << quantize.out;
      EXPECT_NE(quantize.out.find("quantize: [1/"), std::string::npos) << quantize.out;  // the progress lines
      EXPECT_NE(quantize.out.find("48 weights in 4 bits (experts, group 32, symmetric)"), std::string::npos) << quantize.out;
      const Result inspect = run_quatre("inspect " + q);
      EXPECT_EQ(inspect.exit_code, 0) << inspect.out;
      EXPECT_NE(inspect.out.find("quantization quatre_int4: the routed experts' weights in 4 bits, symmetric, groups of 32"),
                std::string::npos) << inspect.out;
      const bool fp8 = std::string(dtype) == "fp8";  // its other linears stay FP8
      EXPECT_EQ(inspect.out.find("the other linears FP8 e4m3 per-tensor") != std::string::npos, fp8) << inspect.out;
      for (const char* mode : {"--raw --prompt 'Once upon a time'", "--prompt 'Hello'"}) {
        const Result r = run_quatre("run --model " + q + " " + mode + " --temperature 0 --max-tokens 12");
        EXPECT_EQ(r.exit_code, 0) << format << " " << dtype << " " << mode << ": " << r.out;
        EXPECT_NE(r.out.find("12 generated"), std::string::npos) << r.out;
      }
    }
  }
}

TEST_F(CliQuantize, UpcastOthersKeepsNoFp8) {
  const std::string src = path("src"), q = path("q");
  ASSERT_EQ(run_quatre("gen-model " + src + " --preset tiny --dtype fp8").exit_code, 0);
  const Result quantize = run_quatre("quantize " + src + " " + q + " --group-size 32 --upcast-others");
  ASSERT_EQ(quantize.exit_code, 0) << quantize.out;
  EXPECT_EQ(quantize.out.find("F8_E4M3"), std::string::npos) << quantize.out;  // progress lines name each dtype
  const Result inspect = run_quatre("inspect " + q);
  EXPECT_NE(inspect.out.find("groups of 32 input columns, BF16 scales; the rest BF16"), std::string::npos) << inspect.out;
}

TEST_F(CliQuantize, BadOptionsAreOneLine) {
  const std::string src = path("src");
  ASSERT_EQ(run_quatre("gen-model " + src + " --preset tiny").exit_code, 0);
  const Result big = run_quatre("quantize " + src + " " + path("a"));  // default group 128 > hidden 64
  EXPECT_EQ(big.exit_code, 1);
  EXPECT_EQ(big.out.rfind("quatre: error: ", 0), 0u) << big.out;
  EXPECT_NE(big.out.find("128 does not divide hidden_size = 64"), std::string::npos) << big.out;
  EXPECT_NE(run_quatre("quantize " + src + " " + path("b") + " --what attention").exit_code, 0);
  EXPECT_NE(run_quatre("quantize " + path("missing") + " " + path("c")).exit_code, 0);
  EXPECT_FALSE(fs::exists(path("a")) && !fs::is_empty(path("a")));  // nothing half-written
}

}  // namespace
