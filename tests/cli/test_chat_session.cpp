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

TEST(ChatSession, ImagesGoWithTheNextMessageAndSurviveSaveAndLoad) {
  ChatSession s;
  EXPECT_NE(s.handle("/help").message.find("/image PATH"), std::string::npos);
  try {
    s.handle("/image a.png");
    FAIL() << "a model without images takes no /image";
  } catch (const InvalidRequest& e) {
    EXPECT_NE(std::string(e.what()).find("no vision tower"), std::string::npos) << e.what();
  }
  std::vector<std::string> checked;
  const ImageCheck check = [&checked](const std::string& path) {
    checked.push_back(path);
    if (!path.ends_with(".png")) throw InvalidRequest(path + ": not a PNG, JPEG, WebP or GIF image");
    return std::string("resized to 28x28 px: 1x1 [IMG] tokens");
  };
  s.set_image_check(check);
  EXPECT_THROW(s.handle("/image"), InvalidRequest);
  const std::string a = (std::filesystem::current_path() / "a.png").string();
  const std::string b = "/tmp/with space/b%.png";
  const ChatAction attached = s.handle("/image a.png");
  EXPECT_EQ(attached.kind, Kind::kNone);
  EXPECT_NE(attached.message.find(a), std::string::npos) << attached.message;
  EXPECT_NE(attached.message.find("1x1 [IMG]"), std::string::npos) << attached.message;
  s.handle("/image " + b);
  try {
    s.handle("/image notes.txt");
    FAIL();
  } catch (const InvalidRequest& e) {
    EXPECT_EQ(std::string(e.what()).rfind("/image: ", 0), 0u) << e.what();
  }
  EXPECT_EQ(s.pending_images(), (std::vector<std::string>{a, b}));

  EXPECT_EQ(s.handle("what differs?").kind, Kind::kGenerate);
  EXPECT_TRUE(s.pending_images().empty());
  s.add_reply("nothing", "");
  s.handle("and now?");  // no image: a plain string message
  const tokenizer::ChatRequest r = s.request();
  ASSERT_EQ(r.messages.size(), 3u);
  const auto& chunks = std::get<std::vector<tokenizer::Chunk>>(r.messages[0].content);
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(std::get<tokenizer::ImageChunk>(chunks[0]).source, a);
  EXPECT_EQ(std::get<tokenizer::ImageChunk>(chunks[1]).source, b);
  EXPECT_EQ(std::get<tokenizer::TextChunk>(chunks[2]).text, "what differs?");
  EXPECT_EQ(std::get<std::string>(r.messages[2].content), "and now?");

  const auto file = temp_file("quatre_chat_images.json");
  s.save(file);
  std::ifstream in(file);
  const std::string saved((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(saved.find("\"file:///tmp/with%20space/b%25.png\""), std::string::npos) << saved;
  EXPECT_NE(saved.find("\"type\": \"image_url\""), std::string::npos) << saved;

  ChatSession loaded;
  loaded.set_image_check(check);
  checked.clear();
  loaded.load(file);
  EXPECT_EQ(checked, (std::vector<std::string>{a, b})) << "load checks the images again";
  ASSERT_EQ(loaded.turns().size(), 3u);
  EXPECT_EQ(loaded.turns()[0].images, (std::vector<std::string>{a, b}));
  EXPECT_EQ(loaded.turns()[0].content, "what differs?");
  EXPECT_TRUE(loaded.turns()[2].images.empty());

  ChatSession text_only;
  text_only.handle("kept");
  EXPECT_THROW(text_only.load(file), InvalidRequest);
  EXPECT_EQ(text_only.turns().size(), 1u);
  std::filesystem::remove(file);

  s.handle("/image a.png");
  s.handle("/reset");
  EXPECT_TRUE(s.pending_images().empty());
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
