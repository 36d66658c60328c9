// Server-Sent Events framing (PROTOCOL §4.5): `data: <json>\n\n` events, `: comment\n\n` keep-alives and the
// final `data: [DONE]\n\n`. Depends on nlohmann::json.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace quatre::server {

// One event; the JSON is written on one line (its strings escape newlines), so the frame is never split.
std::string sse_event(const nlohmann::json& data);
// A comment line, which clients ignore: keeps proxies and clients from timing out during a long prefill.
std::string sse_comment(std::string_view text);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

// JSON text of `j` (UTF-8 kept as is; invalid UTF-8 replaced by U+FFFD instead of throwing).
std::string dump(const nlohmann::json& j);

}  // namespace quatre::server
