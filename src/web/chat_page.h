// The built-in web chat page (web/dist/chat.html, embedded at build time by src/web/embed.cmake): one
// self-contained HTML file with its scripts and styles inlined, served by `quatre serve` at `/`.
#pragma once

#include <string_view>

namespace quatre::web {

// The page's bytes (UTF-8 HTML).
std::string_view chat_page();

}  // namespace quatre::web
