// ChatSession and MultilineReader: the terminal chat's commands, its request, save/load, multi-line input.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "cli/chat_session.h"
#include "core/error.h"

namespace quatre::cli {
namespace {

using Kind = ChatAction::Kind;

std::filesystem::path temp_file(const char* name) { return std::filesystem::temp_directory_path() / name; }

TEST(ChatSession, MessagesAskForRepliesAndCommandsDoNot) {
  ChatSession s;
  EXPECT_EQ(s.handle("   ").kind, Kind::kNone);
  EXPECT_EQ(s.handle("hi").kind, Kind::kGenerate);
  EXPECT_EQ(s.handle("/help").kind, Kind::kNone);
  EXPECT_EQ(s.handle("/quit").kind, Kind::kQuit);
  EXPECT_EQ(s.handle("/exit").kind, Kind::kQuit);
  ASSERT_EQ(s.turns().size(), 1u);
  EXPECT_EQ(s.turns()[0].content, "hi");
}

TEST(ChatSession, RequestHoldsSystemTurnsAndEffortButNotReasoning) {
  ChatSession s;
  s.handle("/system Be brief.");
  s.handle("/reasoning high");
  s.handle("question");
  s.add_reply("answer", "thoughts");
  s.handle("again");
  const tokenizer::ChatRequest r = s.request();
  ASSERT_EQ(r.messages.size(), 4u);
  EXPECT_EQ(r.messages[0].role, tokenizer::Role::kSystem);
  EXPECT_EQ(std::get<std::string>(r.messages[0].content), "Be brief.");
  EXPECT_EQ(r.messages[2].role, tokenizer::Role::kAssistant);
  EXPECT_EQ(std::get<std::string>(r.messages[2].content), "answer");
  EXPECT_EQ(r.reasoning_effort, "high");
  s.handle("/system");
  EXPECT_EQ(s.request().messages.size(), 3u);
  s.handle("/reset");
  EXPECT_TRUE(s.turns().empty());
  EXPECT_EQ(s.reasoning_effort(), "high") << "/reset keeps the settings";
}

TEST(ChatSession, BadCommandsAreErrorsThatNameThem) {
  ChatSession s;
  EXPECT_THROW(s.handle("/reasoning medium"), InvalidRequest);
  EXPECT_THROW(s.handle("/thoughts maybe"), InvalidRequest);
  EXPECT_THROW(s.handle("/save"), InvalidRequest);
  try {
    s.handle("/nope");
    FAIL();
  } catch (const InvalidRequest& e) {
    EXPECT_NE(std::string(e.what()).find("/nope"), std::string::npos);
  }
  EXPECT_TRUE(s.turns().empty());
}

TEST(ChatSession, FailedReplyDropsItsQuestion) {
  ChatSession s;
  s.handle("one");
  s.add_reply("1", "");
  s.handle("two");
  s.drop_unanswered_turn();
  ASSERT_EQ(s.turns().size(), 2u);
  s.drop_unanswered_turn();  // the last turn is a reply: kept
  EXPECT_EQ(s.turns().size(), 2u);
}

TEST(ChatSession, SaveThenLoadRoundTrips) {
  ChatSession a;
  a.handle("/system sys");
  a.handle("/reasoning none");
  a.handle("q1 \"quoted\" é");
  a.add_reply("r1", "because");
  const auto file = temp_file("quatre_chat_roundtrip.json");
  a.save(file);
  ChatSession b;
  b.handle("something else");
  b.load(file);
  EXPECT_EQ(b.system(), "sys");
  EXPECT_EQ(b.reasoning_effort(), "none");
  ASSERT_EQ(b.turns().size(), 2u);
  EXPECT_EQ(b.turns()[0].content, "q1 \"quoted\" é");
  EXPECT_EQ(b.turns()[1].reasoning, "because");
  std::filesystem::remove(file);
}

TEST(ChatSession, LoadRejectsMalformedFilesAndKeepsTheConversation) {
  const auto file = temp_file("quatre_chat_bad.json");
  ChatSession s;
  s.handle("kept");
  for (const char* text : {"not json", "[]", R"({"messages": 3})", R"({"messages": [{"role": "tool", "content": "x"}]})",
                           R"({"messages": [{"role": "user"}]})", R"({"messages": [], "reasoning_effort": "max"})"}) {
    std::ofstream(file) << text;
    EXPECT_THROW(s.load(file), InvalidRequest) << text;
  }
  EXPECT_EQ(s.turns().size(), 1u);
  std::filesystem::remove(file);
  EXPECT_THROW(s.load(file), InvalidRequest);
}

TEST(MultilineReader, BackslashContinuesAndTripleQuotesWrapABlock) {
  MultilineReader r;
  r.feed("one");
  ASSERT_TRUE(r.complete());
  EXPECT_EQ(r.take(), "one");

  r.feed("first \\");
  EXPECT_FALSE(r.complete());
  EXPECT_TRUE(r.pending());
  r.feed("second");
  ASSERT_TRUE(r.complete());
  EXPECT_EQ(r.take(), "first \nsecond");

  r.feed("\"\"\"");
  r.feed("a");
  r.feed("");
  r.feed("b \\");
  EXPECT_FALSE(r.complete());
  r.feed("\"\"\"");
  ASSERT_TRUE(r.complete());
  EXPECT_EQ(r.take(), "a\n\nb \\");
  EXPECT_FALSE(r.pending());
}

}  // namespace
}  // namespace quatre::cli
