// The HTTP layer of Server without a model (every generation endpoint answers 503 "loading" once it has the body):
// bodies are limited however they are framed, a form-encoded JSON body is still read, a 401 drops the body it
// refused, and stop() right after start() returns (what a model that fails to load does).
#include <gtest/gtest.h>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "server/server.h"

namespace quatre::server {
namespace {

ServerOptions loopback(size_t max_body_bytes) {
  ServerOptions o;
  o.host = "127.0.0.1";
  o.port = 0;
  o.max_body_bytes = max_body_bytes;
  return o;
}

class ServerHttpTest : public testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<Server>(loopback(kLimit));
    port_ = server_->bind();
    server_->start();
  }
  static constexpr size_t kLimit = 64 << 10;
  std::unique_ptr<Server> server_;
  int port_ = 0;
};

// A chunked body has no Content-Length for cpp-httplib to check: read whole, it used to be unbounded.
TEST_F(ServerHttpTest, AChunkedBodyOverTheLimitIs413) {
  httplib::Client client("127.0.0.1", port_);
  size_t sent = 0;
  const std::string piece(4096, 'a');
  const httplib::Result r = client.Post("/v1/chat/completions", [&](size_t, httplib::DataSink& sink) {  // no length: chunked
    if (sent >= 4 * kLimit) {
      sink.done();
      return true;
    }
    sent += piece.size();
    return sink.write(piece.data(), piece.size());
  }, "application/json");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 413);
  EXPECT_NE(nlohmann::json::parse(r->body)["error"]["message"].get<std::string>().find("too large"), std::string::npos);
}

TEST_F(ServerHttpTest, ABodyWithAContentLengthOverTheLimitIs413) {
  httplib::Client client("127.0.0.1", port_);
  const httplib::Result r = client.Post("/tokenize", std::string(kLimit + 1, ' '), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
}

// curl -d's default Content-Type: cpp-httplib alone caps such bodies at 8 KiB with a bare 413.
TEST_F(ServerHttpTest, AFormEncodedJsonBodyUnderTheLimitIsRead) {
  httplib::Client client("127.0.0.1", port_);
  const std::string body = nlohmann::json{{"prompt", std::string(kLimit / 2, 'b')}}.dump();
  const httplib::Result r = client.Post("/tokenize", body, "application/x-www-form-urlencoded");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);  // past the body: the model is loading
  EXPECT_NE(r->body.find("loading"), std::string::npos) << r->body;
}

TEST_F(ServerHttpTest, LibraryErrorsSayWhatWasWrong) {
  httplib::Client client("127.0.0.1", port_);
  const httplib::Result r = client.Get("/" + std::string(9000, 'a'));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 414);
  EXPECT_NE(nlohmann::json::parse(r->body)["error"]["message"].get<std::string>().find("URI too long"), std::string::npos);
}

// A POST refused for its API key: 401, and its body is dropped, so the same keep-alive connection answers the
// next request itself (the body used to be left unread and taken for that request: 400 "malformed").
TEST(ServerAuth, A401KeepsTheConnectionInStep) {
  ServerOptions o = loopback(1 << 20);
  o.api_key = "k";
  Server server(o);
  const int port = server.bind();
  server.start();
  httplib::Client client("127.0.0.1", port);
  client.set_keep_alive(true);
  const std::string body = nlohmann::json{{"prompt", std::string(100000, 'x')}}.dump();
  const httplib::Result denied = client.Post("/tokenize", {{"Authorization", "Bearer wrong"}}, body, "application/json");
  ASSERT_TRUE(denied);
  EXPECT_EQ(denied->status, 401);
  EXPECT_EQ(nlohmann::json::parse(denied->body)["error"]["type"], "authentication_error");
  for (int i = 0; i < 2; ++i) {
    const httplib::Result health = client.Get("/health");  // the same connection
    ASSERT_TRUE(health);
    EXPECT_EQ(health->status, 503) << health->body;  // loading: no model in this test
  }
  const httplib::Result models = client.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 401);
  const httplib::Result allowed = client.Post("/tokenize", {{"Authorization", "Bearer k"}}, body, "application/json");
  ASSERT_TRUE(allowed);
  EXPECT_EQ(allowed->status, 503) << allowed->body;  // past the key and the body
}

TEST(ServerLifecycle, StopRightAfterStartReturns) {
  for (int i = 0; i < 100; ++i) {
    Server server(loopback(1 << 20));
    server.bind();
    server.start();
    server.stop();
  }
}

}  // namespace
}  // namespace quatre::server
