// fetch_image and http(s) image parts against an httplib::Server on 127.0.0.1 in the test: a PNG, redirect chains
// (3 followed, 4 refused, each hop checked again), a body over the cap (refused without reading it all), a server
// that never answers and one that drips (refused at the timeout), 404, HTML; the address rules (loopback, a name
// that resolves to loopback, spelled-out IPv4 tricks, IPv6 ranges); https against a plain port; and the fetched
// image giving the same size and tower features as its bytes sent as a data: URL, fetched once when sent twice.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>

#include "core/error.h"
#include "image_encoders.h"
#include "model_test_util.h"
#include "server/api_error.h"
#include "server/image_fetch.h"
#include "server/request_images.h"
#include "synthetic_image.h"
#include "tokenizer/chat_request.h"
#include "vision/vision_model.h"

namespace quatre::server {
namespace {

using Clock = std::chrono::steady_clock;

// A 60x45 RGB PNG of the goldens' synthetic pattern.
std::string test_png() {
  const vision::RgbaImage img = vision::test::synthetic_image(45, 60, 3, 11);
  std::vector<uint8_t> rgb;
  for (size_t i = 0; i < img.rgba.size(); i += 4) rgb.insert(rgb.end(), img.rgba.begin() + static_cast<std::ptrdiff_t>(i), img.rgba.begin() + static_cast<std::ptrdiff_t>(i + 3));
  return vision::test::encode_png(60, 45, 3, 8, rgb);
}

std::string base64(std::string_view bytes) {
  static constexpr char kDigits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    if (i + 2 < bytes.size()) v |= static_cast<uint8_t>(bytes[i + 2]);
    out += kDigits[(v >> 18) & 63];
    out += kDigits[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? kDigits[(v >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? kDigits[v & 63] : '=';
  }
  return out;
}

// The test's image host. Its handlers that wait give up when the fixture ends, so stop() never waits long.
class ImageHost {
 public:
  ImageHost() : png_(test_png()) {
    http_.Get("/a.png", [this](const httplib::Request&, httplib::Response& res) {
      ++n_png_;
      res.set_content(png_, "image/png");
    });
    // /redirect/N: N redirects to /a.png, the last one an absolute URL, the others relative.
    http_.Get(R"(/redirect/(\d+))", [this](const httplib::Request& req, httplib::Response& res) {
      const int n = std::stoi(req.matches[1]);
      res.status = n % 2 == 0 ? 302 : 307;
      res.set_header("Location", n == 1 ? url("/a.png") : "/redirect/" + std::to_string(n - 1));
    });
    http_.Get("/redirect-to", [](const httplib::Request& req, httplib::Response& res) {
      res.status = 301;
      res.set_header("Location", req.get_param_value("url"));
    });
    http_.Get("/no-location", [](const httplib::Request&, httplib::Response& res) { res.status = 302; });
    http_.Get("/page.html", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("<!doctype html><html><body><img src=\"a.png\"></body></html>", "text/html");
    });
    // 64 MiB without a Content-Length (chunked), counting what it hands out.
    http_.Get("/endless", [this](const httplib::Request&, httplib::Response& res) {
      res.set_chunked_content_provider("image/png", [this](size_t, httplib::DataSink& sink) {
        if (n_served_ >= (64 << 20) || is_stopping_) {
          sink.done();
          return true;
        }
        const std::string piece(64 << 10, 'x');
        n_served_ += piece.size();
        return sink.write(piece.data(), piece.size());
      });
    });
    // A Content-Length of 1 GiB.
    http_.Get("/huge", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content_provider(size_t{1} << 30, "image/png", [this](size_t, size_t length, httplib::DataSink& sink) {
        const std::string piece(std::min<size_t>(length, 64 << 10), 'x');
        n_served_ += piece.size();
        return !is_stopping_ && sink.write(piece.data(), piece.size());
      });
    });
    // No status line for 5 s.
    http_.Get("/silent", [this](const httplib::Request&, httplib::Response& res) {
      for (int i = 0; i < 500 && !is_stopping_; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      res.set_content(png_, "image/png");
    });
    // The PNG a byte each 50 ms (about 20 s in all): every read is quick, the whole is not.
    http_.Get("/drip", [this](const httplib::Request&, httplib::Response& res) {
      res.set_chunked_content_provider("image/png", [this](size_t offset, httplib::DataSink& sink) {
        if (offset >= png_.size() || is_stopping_) {
          sink.done();
          return true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        return sink.write(&png_[offset], 1);
      });
    });
    port_ = http_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { http_.listen_after_bind(); });
    // cpp-httplib's stop() does nothing before the listener runs: wait for it, so the destructor never hangs.
    while (!http_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~ImageHost() {
    is_stopping_ = true;
    http_.stop();
    thread_.join();
  }
  ImageHost(const ImageHost&) = delete;
  ImageHost& operator=(const ImageHost&) = delete;

  std::string url(const std::string& path, const std::string& host = "127.0.0.1") const {
    return "http://" + host + ":" + std::to_string(port_) + path;
  }
  int port() const { return port_; }
  const std::string& png() const { return png_; }
  int n_png() const { return n_png_; }
  size_t n_served() const { return n_served_; }

 private:
  std::string png_;
  httplib::Server http_;
  int port_ = 0;
  std::thread thread_;
  std::atomic<int> n_png_{0};
  std::atomic<size_t> n_served_{0};
  std::atomic<bool> is_stopping_{false};
};

FetchRules loopback_allowed(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  return {.max_bytes = 1 << 20, .timeout = timeout, .allow_private_hosts = true, .refused_range = private_range};
}

// The message fetch_image throws for `url` (a test failure when it returns).
std::string refusal(const std::string& url, const FetchRules& rules) {
  try {
    const std::string body = fetch_image(url, rules);
    ADD_FAILURE() << url << " was fetched (" << body.size() << " bytes)";
  } catch (const InvalidRequest& e) {
    return e.what();
  }
  return "";
}

class ImageFetchTest : public testing::Test {
 protected:
  ImageHost host_;
};

TEST_F(ImageFetchTest, FetchesThePng) {
  EXPECT_EQ(fetch_image(host_.url("/a.png"), loopback_allowed()), host_.png());
  EXPECT_EQ(fetch_image(host_.url("/a.png?x=1#frag"), loopback_allowed()), host_.png());
  EXPECT_EQ(fetch_image("HTTP://127.0.0.1:" + std::to_string(host_.port()) + "/a.png", loopback_allowed()), host_.png());
  EXPECT_EQ(host_.n_png(), 3);
}

TEST_F(ImageFetchTest, FollowsThreeRedirectsAndRefusesAFourth) {
  EXPECT_EQ(fetch_image(host_.url("/redirect/1"), loopback_allowed()), host_.png());
  EXPECT_EQ(fetch_image(host_.url("/redirect/3"), loopback_allowed()), host_.png());
  const std::string m = refusal(host_.url("/redirect/4"), loopback_allowed());
  EXPECT_NE(m.find("more than 3 redirects"), std::string::npos) << m;
  EXPECT_EQ(host_.n_png(), 2);
  const std::string bare = refusal(host_.url("/no-location"), loopback_allowed());
  EXPECT_NE(bare.find("302"), std::string::npos) << bare;
  EXPECT_NE(bare.find("without a Location"), std::string::npos) << bare;
}

TEST_F(ImageFetchTest, RedirectsOnlyToHttpAndHttps) {
  const std::string m = refusal(host_.url("/redirect-to?url=file:///etc/passwd"), loopback_allowed());
  EXPECT_NE(m.find("only http:// and https://"), std::string::npos) << m;
  EXPECT_NE(m.find("in a redirect from " + host_.url("/redirect-to?url=file:///etc/passwd")), std::string::npos) << m;
}

TEST_F(ImageFetchTest, ABodyOverTheCapIsRefusedWithoutReadingItAll) {
  const auto t0 = Clock::now();
  const std::string chunked = refusal(host_.url("/endless"), loopback_allowed());
  EXPECT_NE(chunked.find("over the limit of 1048576 bytes"), std::string::npos) << chunked;
  const std::string declared = refusal(host_.url("/huge"), loopback_allowed());
  EXPECT_NE(declared.find("1073741824 bytes, over the limit of 1048576"), std::string::npos) << declared;
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(3));
  // What the kernel's socket buffers took before the client hung up, not the 64 MiB + 1 GiB offered.
  EXPECT_LT(host_.n_served(), size_t{32} << 20);
}

TEST_F(ImageFetchTest, AServerThatNeverAnswersTimesOut) {
  for (const char* path : {"/silent", "/drip"}) {
    const auto t0 = Clock::now();
    const std::string m = refusal(host_.url(path), loopback_allowed(std::chrono::seconds(1)));
    const auto took = Clock::now() - t0;
    EXPECT_NE(m.find("within the 1 s timeout (--image-fetch-timeout)"), std::string::npos) << path << ": " << m;
    EXPECT_GE(took, std::chrono::milliseconds(900)) << path;
    EXPECT_LT(took, std::chrono::milliseconds(2000)) << path;
  }
}

TEST_F(ImageFetchTest, ANon2xxStatusNamesTheHostAndTheStatus) {
  const std::string m = refusal(host_.url("/missing.png"), loopback_allowed());
  EXPECT_NE(m.find("the image server 127.0.0.1:" + std::to_string(host_.port()) + " answered 404 Not Found"), std::string::npos) << m;
}

TEST_F(ImageFetchTest, ConnectionFailuresSayWhatFailed) {
  int port = 0;  // a port nothing listens on: bound, read, closed
  {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    port = ntohs(addr.sin_port);
    close(fd);
  }
  const std::string refused = refusal("http://127.0.0.1:" + std::to_string(port) + "/a.png", loopback_allowed());
  EXPECT_NE(refused.find("cannot connect to the image host 127.0.0.1:" + std::to_string(port)), std::string::npos) << refused;
  // https to a plain HTTP port: the handshake fails (the build has TLS: nothing says https is unavailable)
  const std::string tls = refusal("https://127.0.0.1:" + std::to_string(host_.port()) + "/a.png", loopback_allowed(std::chrono::seconds(3)));
  EXPECT_NE(tls.find("TLS handshake with 127.0.0.1:" + std::to_string(host_.port()) + " failed"), std::string::npos) << tls;
}

TEST_F(ImageFetchTest, BadUrlsAreRefusedBeforeAnyRequest) {
  const FetchRules rules = loopback_allowed();
  EXPECT_NE(refusal("ftp://127.0.0.1/a.png", rules).find("only http:// and https://"), std::string::npos);
  EXPECT_NE(refusal("http://user:pw@127.0.0.1/a.png", rules).find("user names and passwords"), std::string::npos);
  EXPECT_NE(refusal("http://127.0.0.1/a b.png", rules).find("space or control character"), std::string::npos);
  EXPECT_NE(refusal("http://127.0.0.1:99999/a.png", rules).find("bad port"), std::string::npos);
  EXPECT_NE(refusal("http:///a.png", rules).find("no valid host"), std::string::npos);
  EXPECT_NE(refusal("http://bad\\host/a.png", rules).find("no valid host"), std::string::npos);
  EXPECT_EQ(host_.n_png(), 0);
}

// Without --allow-private-image-hosts: loopback by address, by name and in the spellings getaddrinfo accepts;
// the cloud metadata address; nothing is requested.
TEST_F(ImageFetchTest, PrivateAddressesAreRefusedWithoutTheFlag) {
  FetchRules rules = loopback_allowed();
  rules.allow_private_hosts = false;
  const std::string port = std::to_string(host_.port());
  const std::string direct = refusal(host_.url("/a.png"), rules);
  EXPECT_NE(direct.find("refused to fetch from 127.0.0.1: a loopback address"), std::string::npos) << direct;
  EXPECT_NE(direct.find("--allow-private-image-hosts"), std::string::npos) << direct;
  const std::string by_name = refusal(host_.url("/a.png", "localhost"), rules);
  EXPECT_NE(by_name.find("localhost (it resolves to "), std::string::npos) << by_name;
  EXPECT_NE(by_name.find("a loopback address"), std::string::npos) << by_name;
  for (const std::string h : {"2130706433", "0x7f.1", "127.1", "[::ffff:127.0.0.1]", "[::1]", "0.0.0.0"}) {
    const std::string m = refusal("http://" + h + ":" + port + "/a.png", rules);
    EXPECT_TRUE(m.find("a loopback address") != std::string::npos || m.find("an unspecified address") != std::string::npos ||
                m.find("a unspecified address") != std::string::npos) << h << ": " << m;
  }
  const std::string metadata = refusal("http://169.254.169.254/latest/meta-data/", rules);
  EXPECT_NE(metadata.find("a link-local address"), std::string::npos) << metadata;
  EXPECT_EQ(host_.n_png(), 0);
}

// A host the rules let through (127.0.0.1 plays a public one) that redirects to a private one: refused at that hop.
TEST_F(ImageFetchTest, ARedirectToAPrivateAddressIsRefused) {
  FetchRules rules = loopback_allowed();
  rules.allow_private_hosts = false;
  rules.refused_range = [](std::string_view ip) { return ip == "127.0.0.1" ? std::string_view() : private_range(ip); };
  EXPECT_EQ(fetch_image(host_.url("/redirect/2"), rules), host_.png());  // the stand-in is let through
  const std::string port = std::to_string(host_.port());
  for (const std::string& target : std::vector<std::string>{"http://127.0.0.2:" + port + "/a.png", "http://10.0.0.1/a.png", "http://[fd00:ec2::254]/latest"}) {
    const std::string m = refusal(host_.url("/redirect-to?url=" + httplib::detail::encode_query_param(target)), rules);
    EXPECT_NE(m.find("refused to fetch from"), std::string::npos) << target << ": " << m;
    EXPECT_NE(m.find("after 1 redirect"), std::string::npos) << target << ": " << m;
  }
  EXPECT_EQ(host_.n_png(), 1);
}

TEST(PrivateRange, NamesTheRangesOfIssue8) {
  const std::vector<std::pair<const char*, const char*>> cases = {
      {"8.8.8.8", ""},          {"127.0.0.1", "loopback"},     {"127.255.0.9", "loopback"},   {"10.1.2.3", "private"},
      {"172.16.0.1", "private"}, {"172.31.255.255", "private"}, {"172.32.0.1", ""},            {"192.168.1.1", "private"},
      {"100.64.0.1", "private"}, {"100.127.255.255", "private"}, {"100.128.0.1", ""},         {"169.254.169.254", "link-local"},
      {"224.0.0.1", "multicast"}, {"0.0.0.0", "unspecified"},   {"255.255.255.255", "reserved"}, {"::", "unspecified"},
      {"::1", "loopback"},       {"fc00::1", "private"},         {"fd00:ec2::254", "private"},  {"fe80::1", "link-local"},
      {"febf::1", "link-local"}, {"ff02::1", "multicast"},       {"::ffff:127.0.0.1", "loopback"}, {"::ffff:10.0.0.1", "private"},
      {"::ffff:169.254.169.254", "link-local"}, {"::ffff:8.8.8.8", ""}, {"::127.0.0.1", "loopback"},
      {"64:ff9b::a9fe:a9fe", "link-local"}, {"2002:7f00:1::", "loopback"}, {"2001:4860:4860::8888", ""},
      {"localhost", "not an IP address"},
  };
  for (const auto& [ip, want] : cases) EXPECT_EQ(private_range(ip), want) << ip;
}

// Through RequestImages, as the server reads a chat request: 400s naming the part, the same pixels and tower
// features as the bytes sent as a data: URL, one fetch for an image sent twice.
class RemoteImagePartsTest : public ImageFetchTest {
 protected:
  static void SetUpTestSuite() {
    dir_ = new model::test::TempDir();
    loaded_ = new model::test::LoadedModel(model::test::make_checkpoint(*dir_, "m", {"tiny", io::CheckpointFormat::kHuggingFace, false, 1}));
    vision_ = new vision::VisionModel(loaded_->checkpoint, make_backend(Device::kCpu));
  }
  static void TearDownTestSuite() {
    delete vision_;
    delete loaded_;
    delete dir_;
  }
  static ImageRules rules() {
    ImageRules r;
    r.allow_remote = true;
    r.allow_private_hosts = true;
    r.fetch_timeout = std::chrono::seconds(5);
    r.limits.max_encoded_bytes = 1 << 20;
    return r;
  }
  // A user message of one text part and these image URLs.
  static tokenizer::JsonValue body(const std::vector<std::string>& urls) {
    std::string parts = R"({"type": "text", "text": "hi"})";
    for (const std::string& u : urls) parts += R"(, {"type": "image_url", "image_url": {"url": ")" + u + R"("}})";
    return tokenizer::parse_json(R"({"messages": [{"role": "user", "content": [)" + parts + "]}]}");
  }
  static RequestImages read(const std::vector<std::string>& urls, const ImageRules& r, tokenizer::ChatRequest* chat_out = nullptr) {
    const tokenizer::JsonValue b = body(urls);
    tokenizer::ChatRequest chat = tokenizer::parse_chat_request(b);
    RequestImages images = RequestImages::read(chat, b, r, vision_);
    if (chat_out != nullptr) *chat_out = std::move(chat);
    return images;
  }
  static std::string refusal(const std::string& url, const ImageRules& r) {
    try {
      read({url}, r);
      ADD_FAILURE() << url << " was read";
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status(), 400) << e.what();
      EXPECT_EQ(e.param(), "messages[0].content[1].image_url") << e.what();
      return e.what();
    }
    return "";
  }
  static tokenizer::ImageSize size_of(const tokenizer::ChatRequest& chat, size_t j) {
    return *std::get<tokenizer::ImageChunk>(std::get<std::vector<tokenizer::Chunk>>(chat.messages[0].content)[j]).size;
  }

  static model::test::TempDir* dir_;
  static model::test::LoadedModel* loaded_;
  static vision::VisionModel* vision_;
};
model::test::TempDir* RemoteImagePartsTest::dir_ = nullptr;
model::test::LoadedModel* RemoteImagePartsTest::loaded_ = nullptr;
vision::VisionModel* RemoteImagePartsTest::vision_ = nullptr;

TEST_F(RemoteImagePartsTest, AFetchedImageEqualsItsDataUrl) {
  const std::string url = host_.url("/a.png");
  const std::string data_url = "data:image/png;base64," + base64(host_.png());
  tokenizer::ChatRequest fetched_chat, data_chat;
  const RequestImages fetched = read({url, url}, rules(), &fetched_chat);
  EXPECT_EQ(host_.n_png(), 1);  // sent twice, fetched once
  const RequestImages sent = read({data_url}, rules(), &data_chat);
  EXPECT_EQ(size_of(fetched_chat, 1), size_of(data_chat, 1));
  EXPECT_EQ(size_of(fetched_chat, 2), size_of(data_chat, 1));
  const std::vector<float> want = sent.features({{.source = data_url, .size = {}, .grid = {}}}, *vision_);
  ASSERT_FALSE(want.empty());
  EXPECT_EQ(fetched.features({{.source = url, .size = {}, .grid = {}}}, *vision_), want);
}

TEST_F(RemoteImagePartsTest, RefusalsAre400sNamingThePart) {
  ImageRules off = rules();
  off.allow_remote = false;
  EXPECT_NE(refusal(host_.url("/a.png"), off).find("--allow-remote-images"), std::string::npos);
  ImageRules public_only = rules();
  public_only.allow_private_hosts = false;
  EXPECT_NE(refusal(host_.url("/a.png"), public_only).find("a loopback address"), std::string::npos);
  EXPECT_NE(refusal(host_.url("/page.html"), rules()).find("not a PNG, JPEG, WebP or GIF image"), std::string::npos);
  EXPECT_NE(refusal(host_.url("/missing.png"), rules()).find("answered 404"), std::string::npos);
  EXPECT_NE(refusal(host_.url("/endless"), rules()).find("over the limit of 1048576 bytes"), std::string::npos);
  EXPECT_EQ(host_.n_png(), 0);
}

}  // namespace
}  // namespace quatre::server
