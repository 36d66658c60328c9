// `quatre run --image`: images laid out before the prompt text and encoded by a generated checkpoint's vision tower;
// a file that is not an image and a model without a vision tower are clear errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "cli_test_util.h"
#include "image_encoders.h"

namespace quatre::vision::test {
namespace {

namespace fs = std::filesystem;
using cli::test::run_quatre;

struct Fixture {
  fs::path dir = fs::path(::testing::TempDir()) / ("quatre_cli_image_" + std::to_string(::getpid()));
  Fixture() {
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::vector<uint8_t> px(60 * 45 * 3);
    for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(i * 13);
    std::ofstream(dir / "a.png", std::ios::binary) << encode_png(60, 45, 3, 8, px);
    std::ofstream(dir / "b.png", std::ios::binary) << encode_png(200, 30, 3, 8, std::vector<uint8_t>(200 * 30 * 3, 90));
    std::ofstream(dir / "not.png") << "hello";
  }
  ~Fixture() { fs::remove_all(dir); }
};

TEST(CliImage, RunWithImages) {
  Fixture f;
  const fs::path model = f.dir / "tiny";
  ASSERT_EQ(run_quatre("gen-model --preset tiny --seed 1 " + model.string()).exit_code, 0);
  const auto r = run_quatre("run --model " + model.string() + " --image " + (f.dir / "a.png").string() + " --image " +
                            (f.dir / "b.png").string() + " -p hi -n 3 --temperature 0 --show-prompt");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  // 60x45 -> 84x56 (3 x 2 tokens); 200x30 -> 112x28 after the 112-px cap (4 x 1)
  EXPECT_NE(r.out.find("[INST][IMG][IMG][IMG][IMG_BREAK][IMG][IMG][IMG][IMG_END][IMG][IMG][IMG][IMG][IMG_END]hi[/INST]"),
            std::string::npos) << r.out;

  const auto bad = run_quatre("run --model " + model.string() + " --image " + (f.dir / "not.png").string() + " -p hi -n 1");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.out.find("not a PNG, JPEG, WebP or GIF image"), std::string::npos) << bad.out;

  const fs::path text_only = f.dir / "text";
  ASSERT_EQ(run_quatre("gen-model --preset tiny --text-only " + text_only.string()).exit_code, 0);
  const auto no_tower = run_quatre("run --model " + text_only.string() + " --image " + (f.dir / "a.png").string() + " -p hi -n 1");
  EXPECT_NE(no_tower.exit_code, 0);
  EXPECT_NE(no_tower.out.find("no vision tower"), std::string::npos) << no_tower.out;
}

}  // namespace
}  // namespace quatre::vision::test
