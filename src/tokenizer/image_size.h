// The pixel size of an image chunk from its header bytes only (PNG, JPEG, GIF, WebP), enough to lay out
// its [IMG] tokens (PROTOCOL §2.10). No pixel decoding: the vision work adds that. Depends on core and
// chat_request only.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "tokenizer/chat_request.h"

namespace quatre::tokenizer {

// Standard base64 (RFC 4648 alphabet; '-' and '_' of the URL-safe alphabet are accepted too); whitespace is
// skipped, padding is optional. Throws InvalidRequest naming `what` on any other character.
std::string base64_decode(std::string_view text, std::string_view what);

// Width and height from the header of PNG, JPEG (SOFn marker), GIF (logical screen) or WebP (VP8, VP8L, VP8X)
// data. Throws InvalidRequest naming `what` for other formats or a truncated/corrupt header.
ImageSize image_size_from_bytes(std::string_view bytes, std::string_view what);

// Finds the size of an image chunk: `chunk.size` when set; for a `data:image/...;base64,` URL or bare base64,
// from the decoded header. http(s):// and file:// URLs are refused (downloads are not supported yet).
// `what` names the chunk in error messages (e.g. "messages[0].content[1]").
ImageSize image_size_of_chunk(const ImageChunk& chunk, std::string_view what);

// How the renderer learns image sizes; image_size_of_chunk by default.
using ImageSizeResolver = std::function<ImageSize(const ImageChunk& chunk, std::string_view what)>;

}  // namespace quatre::tokenizer
