// Helpers shared by the io tests: a self-deleting temporary directory, raw file I/O, and a check that
// a statement throws quatre::LoadError whose message contains given pieces (the file, the tensor...).
#pragma once

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "core/error.h"

namespace quatre::io::test {

// A fresh directory under testing::TempDir(), unique per process, test and instance; removed with its contents.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = "quatre_io_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
    if (info != nullptr) name += std::string("_") + info->test_suite_name() + "_" + info->name();
    for (char& c : name) {
      if (c == '/' || c == '\\') c = '_';
    }
    path_ = std::filesystem::path(::testing::TempDir()) / name;
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(std::string_view name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// Replaces the file by a new one (unlinking first: truncating a file in place makes ext4 flush it on close,
// which turns thousands of small rewrites into seconds of I/O wait).
inline void write_bytes(const std::filesystem::path& path, std::string_view bytes) {
  std::error_code ignored;
  std::filesystem::remove(path, ignored);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

inline std::string read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Runs `statement`; fails unless it throws LoadError whose message contains every piece. Returns the message.
template <typename F>
std::string expect_load_error(F&& statement, std::initializer_list<std::string_view> pieces, const char* file, int line) {
  ::testing::ScopedTrace trace(file, line, "expected a LoadError");
  try {
    statement();
  } catch (const LoadError& e) {
    const std::string message = e.what();
    for (std::string_view piece : pieces) {
      EXPECT_NE(message.find(piece), std::string::npos) << "the message lacks \"" << piece << "\": " << message;
    }
    return message;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw something other than LoadError: " << e.what();
    return {};
  }
  ADD_FAILURE() << "did not throw";
  return {};
}

}  // namespace quatre::io::test

// EXPECT_LOAD_ERROR(statement, "piece", ...): the statement throws LoadError naming every piece.
#define EXPECT_LOAD_ERROR(statement, ...) \
  ::quatre::io::test::expect_load_error([&] { (void)(statement); }, {__VA_ARGS__}, __FILE__, __LINE__)
