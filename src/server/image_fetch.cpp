// fetch_image: URL parsing, the address rules, resolution under the deadline, one GET per hop with its watchdog.
#include "server/image_fetch.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <httplib.h>

#include "core/error.h"

// https needs the OpenSSL build of cpp-httplib, and every file that includes httplib.h must agree on it (the
// macro changes its classes): src/server/CMakeLists.txt takes the flag from cpp-httplib's pkg-config Cflags and
// passes it on PUBLIC with the library, so it is one definition for all.
#ifndef CPPHTTPLIB_OPENSSL_SUPPORT
#error "image_fetch.cpp needs cpp-httplib with CPPHTTPLIB_OPENSSL_SUPPORT (its pkg-config Cflags define it)"
#endif

namespace quatre::server {
namespace {

using Clock = std::chrono::steady_clock;

struct Url {
  bool is_https = false;
  std::string host;    // lower case; an IPv6 address without its brackets
  int port = 0;
  std::string target;  // path and query ("/" at least), without the fragment

  // host[:port] as a Host header writes it: the port only when it is not the scheme's.
  std::string authority() const {
    const std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    return port == (is_https ? 443 : 80) ? h : fmt::format("{}:{}", h, port);
  }
  std::string text() const { return (is_https ? "https://" : "http://") + authority() + target; }
};

// A URL as a message quotes it: long ones cut.
std::string shown(std::string_view url) {
  return url.size() <= 200 ? std::string(url) : fmt::format("{}...", url.substr(0, 200));
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// scheme://host[:port][/path][?query][#fragment], http and https only, without user info.
Url parse_url(std::string_view s) {
  if (std::any_of(s.begin(), s.end(), [](unsigned char c) { return c <= 0x20 || c == 0x7f; })) {
    throw InvalidRequest(fmt::format("the image URL '{}' has a space or control character: percent-encode it", shown(s)));
  }
  const size_t scheme_end = s.find("://");
  const std::string scheme = lower(s.substr(0, scheme_end == std::string_view::npos ? 0 : scheme_end));
  if (scheme != "http" && scheme != "https") {
    throw InvalidRequest(fmt::format("only http:// and https:// image URLs are fetched, got '{}'", shown(s)));
  }
  Url url;
  url.is_https = scheme == "https";
  const std::string_view rest = s.substr(scheme_end + 3);
  const std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
  std::string_view target = rest.substr(authority.size());
  target = target.substr(0, target.find('#'));
  if (authority.find('@') != std::string_view::npos) {
    throw InvalidRequest(fmt::format("user names and passwords in image URLs are not supported: '{}'", shown(s)));
  }
  std::string_view host = authority, port_text;
  bool is_valid_host = true;
  if (authority.starts_with('[')) {  // [IPv6]
    const size_t close = authority.find(']');
    host = authority.substr(1, close == std::string_view::npos ? std::string_view::npos : close - 1);
    const std::string_view after = close == std::string_view::npos ? "" : authority.substr(close + 1);
    if (close == std::string_view::npos || (!after.empty() && !after.starts_with(':'))) is_valid_host = false;
    if (after.starts_with(':')) port_text = after.substr(1);
    is_valid_host = is_valid_host && host.find(':') != std::string_view::npos &&
                    std::all_of(host.begin(), host.end(), [](unsigned char c) { return std::isxdigit(c) || c == ':' || c == '.'; });
  } else {
    const size_t colon = authority.rfind(':');
    if (colon != std::string_view::npos) {
      host = authority.substr(0, colon);
      port_text = authority.substr(colon + 1);
    }
    is_valid_host = std::all_of(host.begin(), host.end(), [](unsigned char c) { return std::isalnum(c) || c == '.' || c == '-' || c == '_'; });
  }
  if (host.empty() || !is_valid_host) throw InvalidRequest(fmt::format("the image URL '{}' has no valid host", shown(s)));
  url.host = lower(host);
  url.port = url.is_https ? 443 : 80;
  if (authority.ends_with(':') || !port_text.empty()) {
    const auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), url.port);
    if (ec != std::errc() || end != port_text.data() + port_text.size() || url.port < 1 || url.port > 65535) {
      throw InvalidRequest(fmt::format("the image URL '{}' has a bad port", shown(s)));
    }
  }
  url.target = target.starts_with('/') ? "" : "/";
  for (const char c : target) {  // sent as given, but for bytes outside ASCII (a browser encodes them too)
    if (static_cast<unsigned char>(c) < 0x80) url.target += c;
    else url.target += fmt::format("%{:02X}", static_cast<unsigned char>(c));
  }
  return url;
}

// The absolute URL a redirect's Location names (RFC 3986 §5.2, without removing dot segments).
std::string resolve_location(const Url& base, std::string_view location) {
  const size_t colon = location.find(':');
  const bool has_scheme = colon != std::string_view::npos && colon > 0 && std::isalpha(static_cast<unsigned char>(location[0])) &&
      std::all_of(location.begin(), location.begin() + static_cast<std::ptrdiff_t>(colon),
                  [](unsigned char c) { return std::isalnum(c) || c == '+' || c == '-' || c == '.'; });
  if (has_scheme) return std::string(location);
  const std::string scheme = base.is_https ? "https:" : "http:";
  if (location.starts_with("//")) return scheme + std::string(location);
  const std::string origin = scheme + "//" + base.authority();
  if (location.starts_with('/')) return origin + std::string(location);
  if (location.empty() || location.starts_with('#')) return origin + base.target;
  const std::string_view path = std::string_view(base.target).substr(0, base.target.find('?'));
  if (location.starts_with('?')) return origin + std::string(path) + std::string(location);
  return origin + std::string(path.substr(0, path.rfind('/') + 1)) + std::string(location);
}

std::string_view ipv4_range(uint32_t a /* host byte order */) {
  const auto in = [a](uint32_t net, int bits) { return (a >> (32 - bits)) == (net >> (32 - bits)); };
  if (in(0x00000000, 8)) return "unspecified";                                          // 0.0.0.0/8
  if (in(0x7f000000, 8)) return "loopback";                                             // 127/8
  if (in(0x0a000000, 8) || in(0xac100000, 12) || in(0xc0a80000, 16)) return "private";  // 10/8, 172.16/12, 192.168/16
  if (in(0x64400000, 10)) return "private";                                             // 100.64/10, carrier-grade NAT
  if (in(0xa9fe0000, 16)) return "link-local";                                          // 169.254/16, cloud metadata
  if (in(0xc0000000, 24) || in(0xc6120000, 15)) return "reserved";                      // 192.0.0/24, 198.18/15
  if (in(0xe0000000, 4)) return "multicast";                                            // 224/4
  if (in(0xf0000000, 4)) return "reserved";                                             // 240/4, broadcast
  return "";
}

uint32_t ipv4_at(const uint8_t* b) {
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
}

std::chrono::duration<double> seconds(std::chrono::milliseconds ms) { return ms; }

std::string timed_out(std::string_view host, const FetchRules& rules) {
  return fmt::format("no complete answer from {} within the {:g} s timeout (--image-fetch-timeout)", host, seconds(rules.timeout).count());
}

// The host's addresses (numeric, in getaddrinfo's order). The lookup runs on a thread of its own, left behind
// at the deadline: getaddrinfo cannot be interrupted, and it must not hold the request past its timeout.
std::vector<std::string> resolve(const std::string& host, const FetchRules& rules, Clock::time_point deadline) {
  struct Lookup {
    std::mutex m;
    std::condition_variable cv;
    bool is_done = false;
    int status = 0;
    std::vector<std::string> ips;
  };
  auto lookup = std::make_shared<Lookup>();
  std::thread([lookup, host] {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* list = nullptr;
    const int status = getaddrinfo(host.c_str(), nullptr, &hints, &list);
    std::vector<std::string> ips;
    for (const addrinfo* p = status == 0 ? list : nullptr; p != nullptr; p = p->ai_next) {
      std::array<char, INET6_ADDRSTRLEN> text{};
      const void* addr = p->ai_family == AF_INET    ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(p->ai_addr)->sin_addr)
                         : p->ai_family == AF_INET6 ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in6*>(p->ai_addr)->sin6_addr)
                                                    : nullptr;
      if (addr == nullptr || inet_ntop(p->ai_family, addr, text.data(), text.size()) == nullptr) continue;
      if (std::find(ips.begin(), ips.end(), text.data()) == ips.end()) ips.emplace_back(text.data());
    }
    if (list != nullptr) freeaddrinfo(list);
    {
      std::lock_guard lock(lookup->m);
      lookup->status = status;
      lookup->ips = std::move(ips);
      lookup->is_done = true;
    }
    lookup->cv.notify_all();
  }).detach();
  std::unique_lock lock(lookup->m);
  if (!lookup->cv.wait_until(lock, deadline, [&] { return lookup->is_done; })) throw InvalidRequest(timed_out(host, rules));
  if (lookup->status != 0 || lookup->ips.empty()) {
    throw InvalidRequest(fmt::format("cannot resolve the image host {}: {}", host, lookup->status != 0 ? gai_strerror(lookup->status) : "no address"));
  }
  return lookup->ips;
}

// The addresses to connect to: all of the host's, each checked (one private address refuses the host).
std::vector<std::string> checked_addresses(const Url& url, const FetchRules& rules, Clock::time_point deadline) {
  std::vector<std::string> ips = resolve(url.host, rules, deadline);
  if (rules.allow_private_hosts) return ips;
  for (const std::string& ip : ips) {
    const std::string_view range = rules.refused_range(ip);
    if (range.empty()) continue;
    const std::string what = ip == url.host ? ip : fmt::format("{} (it resolves to {})", url.host, ip);
    throw InvalidRequest(fmt::format("refused to fetch from {}: a {} address; image URLs must name a public host "
                                     "(start the server with --allow-private-image-hosts to allow private ones)", what, range));
  }
  return ips;
}

// Calls client.stop() at the deadline unless the GET ends first: cpp-httplib's timeouts bound each read, not the
// whole answer, which a server could drip out a byte at a time. stop() only shuts the socket down (thread-safe).
class Watchdog {
 public:
  Watchdog(httplib::ClientImpl& client, Clock::time_point deadline)
      : thread_([this, &client, deadline] {
          std::unique_lock lock(m_);
          if (cv_.wait_until(lock, deadline, [this] { return is_done_; })) return;
          has_fired_ = true;
          client.stop();
        }) {}
  ~Watchdog() { finish(); }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Ends the watch; whether it stopped the GET.
  bool finish() {
    {
      std::lock_guard lock(m_);
      is_done_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
    return has_fired_;
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool is_done_ = false;
  bool has_fired_ = false;
  std::thread thread_;  // last: it starts once the members above exist
};

bool is_redirect(int status) { return status == 301 || status == 302 || status == 303 || status == 307 || status == 308; }

struct Answer {
  int status = 0;  // 0: no status line came
  std::string reason;
  std::string location;  // of a redirect
  std::string body;
  int64_t declared_bytes = -1;  // Content-Length
  bool is_over_cap = false;
};

// One GET of `url` from exactly `ip`. Returns false when the connection to `ip` could not be made (the caller
// tries the host's next address); throws for every other failure.
bool get(const Url& url, const std::string& ip, const FetchRules& rules, Clock::time_point deadline, Answer& answer) {
  const auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - Clock::now());
  if (left.count() <= 0) throw InvalidRequest(timed_out(url.authority(), rules));
  std::unique_ptr<httplib::ClientImpl> client;
  if (url.is_https) {
    auto tls = std::make_unique<httplib::SSLClient>(url.host, url.port);
    if (!tls->is_valid()) throw InvalidRequest("https image URLs are not available: the TLS context could not be created");
    tls->enable_server_certificate_verification(true);  // the system's CA store, and the host name checked
    client = std::move(tls);
  } else {
    client = std::make_unique<httplib::ClientImpl>(url.host, url.port);
  }
  client->set_hostname_addr_map({{url.host, ip}});  // connect to the address checked, not to a second lookup's
  // The watchdog ends the GET at the deadline; the library's own timeouts, a little later, are only a backstop.
  const auto backstop = left + std::chrono::milliseconds(250);
  client->set_connection_timeout(backstop);
  client->set_read_timeout(backstop);
  client->set_write_timeout(backstop);
  client->set_follow_location(false);  // followed by fetch_image, which checks every hop
  client->set_url_encode(false);       // parse_url left only printable ASCII
  client->set_decompress(false);
  client->set_keep_alive(false);
  const httplib::Headers headers = {{"Host", url.authority()}, {"Accept", "image/*, */*;q=0.8"},
                                    {"Accept-Encoding", "identity"}, {"User-Agent", "quatre"}};
  answer = {};
  const auto on_head = [&](const httplib::Response& res) {
    answer.status = res.status;
    answer.reason = res.reason;
    if (is_redirect(res.status)) answer.location = res.get_header_value("Location");
    if (res.status < 200 || res.status >= 300) return false;  // the body is not read
    const std::string length = res.get_header_value("Content-Length");
    int64_t n = -1;
    if (std::from_chars(length.data(), length.data() + length.size(), n).ec == std::errc()) answer.declared_bytes = n;
    answer.is_over_cap = answer.declared_bytes > rules.max_bytes;
    return !answer.is_over_cap;
  };
  const auto on_body = [&](const char* data, size_t n) {
    answer.is_over_cap = answer.body.size() + n > static_cast<size_t>(rules.max_bytes);
    if (!answer.is_over_cap) answer.body.append(data, n);
    return !answer.is_over_cap;
  };
  Watchdog watchdog(*client, deadline);
  const httplib::Result result = client->Get(url.target, headers, on_head, on_body);
  if (watchdog.finish() || result.error() == httplib::Error::ConnectionTimeout) throw InvalidRequest(timed_out(url.authority(), rules));
  if (answer.is_over_cap) {
    throw InvalidRequest(answer.declared_bytes > rules.max_bytes
        ? fmt::format("the image at {} is {} bytes, over the limit of {}", url.authority(), answer.declared_bytes, rules.max_bytes)
        : fmt::format("the image at {} is over the limit of {} bytes (stopped reading there)", url.authority(), rules.max_bytes));
  }
  if (answer.status != 0 && (answer.status < 200 || answer.status >= 300)) {
    if (is_redirect(answer.status) && !answer.location.empty()) return true;
    throw InvalidRequest(fmt::format("the image server {} answered {} {}{}", url.authority(), answer.status, answer.reason,
                                     is_redirect(answer.status) ? " without a Location" : ""));
  }
  switch (result.error()) {
    case httplib::Error::Success: return true;
    case httplib::Error::Connection: return false;
    case httplib::Error::SSLConnection:
      throw InvalidRequest(fmt::format("the TLS handshake with {} failed (is it an https server?)", url.authority()));
    case httplib::Error::SSLServerVerification:
      throw InvalidRequest(fmt::format("the TLS certificate of {} could not be verified", url.authority()));
    case httplib::Error::Read:
      throw InvalidRequest(fmt::format("the connection to {} ended before a whole answer came", url.authority()));
    default:
      throw InvalidRequest(fmt::format("fetching from {} failed: {}", url.authority(), httplib::to_string(result.error())));
  }
}

// One hop: the body, or the redirect's target in answer.location.
Answer fetch_hop(const Url& url, const FetchRules& rules, Clock::time_point deadline) {
  Answer answer;
  for (const std::string& ip : checked_addresses(url, rules, deadline)) {
    if (get(url, ip, rules, deadline, answer)) return answer;
  }
  throw InvalidRequest(fmt::format("cannot connect to the image host {}", url.authority()));
}

}  // namespace

std::string_view private_range(std::string_view ip) {
  const std::string text(ip);
  std::array<uint8_t, 16> b{};
  if (inet_pton(AF_INET, text.c_str(), b.data()) == 1) return ipv4_range(ipv4_at(b.data()));
  if (inet_pton(AF_INET6, text.c_str(), b.data()) != 1) return "not an IP address";
  const auto zeros = [&](int n) { return std::all_of(b.begin(), b.begin() + n, [](uint8_t x) { return x == 0; }); };
  if (zeros(16)) return "unspecified";                                              // ::
  if (zeros(15) && b[15] == 1) return "loopback";                                   // ::1
  if (zeros(10) && b[10] == 0xff && b[11] == 0xff) return ipv4_range(ipv4_at(&b[12]));  // ::ffff:a.b.c.d, mapped
  if (zeros(12)) return ipv4_range(ipv4_at(&b[12]));                                // ::a.b.c.d, compatible
  constexpr std::array<uint8_t, 12> kNat64 = {0x00, 0x64, 0xff, 0x9b};              // 64:ff9b::/96
  if (std::equal(kNat64.begin(), kNat64.end(), b.begin())) return ipv4_range(ipv4_at(&b[12]));
  if (b[0] == 0x20 && b[1] == 0x02) return ipv4_range(ipv4_at(&b[2]));              // 2002::/16, 6to4
  if ((b[0] & 0xfe) == 0xfc) return "private";                                      // fc00::/7, unique local
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return "link-local";                   // fe80::/10
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) return "private";                      // fec0::/10, site-local
  if (b[0] == 0xff) return "multicast";                                             // ff00::/8
  return "";
}

std::string fetch_image(std::string_view url_text, const FetchRules& rules) {
  const Clock::time_point deadline = Clock::now() + rules.timeout;
  Url url = parse_url(url_text);
  for (int n_redirects = 0;; ++n_redirects) {
    Answer answer;
    try {
      answer = fetch_hop(url, rules, deadline);
    } catch (const InvalidRequest& e) {
      if (n_redirects == 0) throw;
      throw InvalidRequest(fmt::format("{} (after {} redirect{}, at {})", e.what(), n_redirects, n_redirects == 1 ? "" : "s", shown(url.text())));
    }
    if (answer.location.empty()) return std::move(answer.body);
    if (n_redirects == kMaxImageRedirects) {
      throw InvalidRequest(fmt::format("more than {} redirects (the last one from {} to '{}')", kMaxImageRedirects, shown(url.text()),
                                       shown(answer.location)));
    }
    try {
      url = parse_url(resolve_location(url, answer.location));
    } catch (const InvalidRequest& e) {
      throw InvalidRequest(fmt::format("{} (in a redirect from {})", e.what(), shown(url.text())));
    }
  }
}

}  // namespace quatre::server
