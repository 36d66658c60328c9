// StopMatcher against a direct reference: the whole text cut before the earliest stop string, fed in every
// split; nothing streamed ever holds a prefix of the match.
#include <gtest/gtest.h>

#include "server/stop_matcher.h"

namespace quatre::server {
namespace {

// Feeds `text` in pieces of `step` bytes; returns the concatenated output and checks the streamed prefix
// never extends past the reference cut.
std::string feed(const std::vector<std::string>& stops, const std::string& text, size_t step, bool& matched) {
  StopMatcher m(stops);
  std::string out;
  for (size_t i = 0; i < text.size(); i += step) out += m.push(text.substr(i, step));
  out += m.finish();
  matched = m.matched().has_value();
  return out;
}

std::string reference_cut(const std::vector<std::string>& stops, const std::string& text) {
  size_t best = std::string::npos;
  for (const std::string& s : stops) {
    if (!s.empty()) best = std::min(best, text.find(s));
  }
  return best == std::string::npos ? text : text.substr(0, best);
}

TEST(StopMatcher, EverySplitMatchesTheReference) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"END"}, "abc ENDING def"},          {{"END", "c E"}, "abc ENDING def"}, {{"xyz"}, "no match here xy"},
      {{"aab"}, "aaaaab tail"},             {{"é!"}, "café! oui"},             {{"\n\n"}, "line\nline\n\nnext"},
      {{"", "zz"}, "empty stops are ignored"}, {{"ab", "b"}, "xab"}};
  for (const auto& [stops, text] : cases) {
    for (size_t step = 1; step <= text.size(); ++step) {
      bool matched = false;
      EXPECT_EQ(feed(stops, text, step, matched), reference_cut(stops, text)) << text << " step " << step;
      EXPECT_EQ(matched, reference_cut(stops, text) != text) << text;
    }
  }
}

TEST(StopMatcher, HoldsBackOnlyAPossiblePrefix) {
  StopMatcher m({"STOP"});
  EXPECT_EQ(m.push("hello ST"), "hello ");  // "ST" might start STOP
  EXPECT_EQ(m.push("AR"), "STAR");          // it did not
  EXPECT_EQ(m.push(" STO"), " ");
  EXPECT_EQ(m.push("P and more"), "");
  EXPECT_EQ(m.matched(), "STOP");
  EXPECT_EQ(m.push("after"), "");
  EXPECT_EQ(m.finish(), "");
}

TEST(StopMatcher, EarliestMatchWins) {
  StopMatcher m({"later", "ear"});
  EXPECT_EQ(m.push("the earlier later"), "the ");
  EXPECT_EQ(m.matched(), "ear");
}

}  // namespace
}  // namespace quatre::server
