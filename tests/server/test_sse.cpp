// SSE framing and the OpenAI error envelope.
#include <gtest/gtest.h>

#include "server/api_error.h"
#include "server/sse.h"

namespace quatre::server {
namespace {

TEST(Sse, OneLinePerEventEvenWithNewlinesInText) {
  const std::string e = sse_event({{"content", "a\nb\r\n\n"}});
  ASSERT_TRUE(e.starts_with("data: "));
  ASSERT_TRUE(e.ends_with("\n\n"));
  EXPECT_EQ(e.find('\n'), e.size() - 2);  // the JSON escapes its newlines: one data line
  EXPECT_EQ(nlohmann::json::parse(e.substr(6))["content"], "a\nb\r\n\n");
}

TEST(Sse, CommentsAndDone) {
  EXPECT_EQ(sse_comment("keep-alive"), ": keep-alive\n\n");
  EXPECT_EQ(sse_comment("a\nb"), ": a b\n\n");
  EXPECT_EQ(kSseDone, "data: [DONE]\n\n");
}

TEST(Sse, InvalidUtf8IsReplacedNotThrown) {
  const std::string e = sse_event({{"content", std::string("ok\xff")}});
  EXPECT_EQ(nlohmann::json::parse(e.substr(6))["content"], "ok\xEF\xBF\xBD");
}

TEST(ApiError, OpenAiEnvelope) {
  const nlohmann::json j = error_body(bad_field("temperature", "expected a number, got string"));
  EXPECT_EQ(j["error"]["message"], "temperature: expected a number, got string");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "temperature");
  EXPECT_TRUE(j["error"]["code"].is_null());
  EXPECT_EQ(error_body(ApiError(401, "no"))["error"]["type"], "authentication_error");
  EXPECT_EQ(error_body(ApiError(404, "no", "model", "model_not_found"))["error"]["code"], "model_not_found");
  EXPECT_EQ(error_body(ApiError(503, "loading"))["error"]["type"], "server_error");
}

TEST(ApiError, ParamFromALowerLayersMessage) {
  EXPECT_EQ(from_invalid_request(InvalidRequest("messages[2].content: expected a string")).param(), "messages[2].content");
  EXPECT_EQ(from_invalid_request(InvalidRequest("This model's context is full: sorry")).param(), "");
  EXPECT_EQ(from_invalid_request(InvalidRequest("x")).status(), 400);
}

}  // namespace
}  // namespace quatre::server
