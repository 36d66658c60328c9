// Fetching an http(s) image URL for --allow-remote-images (issue #8): a GET per hop on cpp-httplib's client, with
// redirects followed here (at most kMaxImageRedirects) so every hop is checked again, the host resolved here and
// refused when private (SSRF) unless allowed, the connection made to exactly the address checked (no DNS
// rebinding), the body capped and the whole fetch under one deadline. Depends on core (errors) and cpp-httplib.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace quatre::server {

inline constexpr int kMaxImageRedirects = 3;

// The name of the range a numeric address lies in when a fetch must not reach it ("loopback", "private",
// "link-local", ...), or "" for a public one. IPv4-mapped, IPv4-compatible, NAT64 and 6to4 IPv6 addresses are
// judged by the IPv4 address they carry. Something that is not a numeric address gives "not an IP address".
std::string_view private_range(std::string_view ip);

struct FetchRules {
  int64_t max_bytes = 20 << 20;                // the body; a larger one is refused without reading past the cap
  std::chrono::milliseconds timeout{10'000};   // the whole fetch: resolving, connecting, every hop, reading
  bool allow_private_hosts = false;            // --allow-private-image-hosts: loopback, private, ... too
  // The range that refuses an address ("" lets it through), asked for every address of every hop unless
  // allow_private_hosts. Tests that need a "public" host on loopback pass their own.
  std::function<std::string_view(std::string_view ip)> refused_range = private_range;
};

// The body at `url` (http:// or https://). Throws InvalidRequest saying what was wrong and with which host: a
// refused scheme or address, no answer in time, a non-2xx status, too many redirects, a body over the cap.
std::string fetch_image(std::string_view url, const FetchRules& rules);

}  // namespace quatre::server
