// RequestImages: image URL rules (image_fetch.cpp fetches), decoding and preprocessing per part, the tower over
// the prompt's images.
#include "server/request_images.h"

#include <algorithm>
#include <cctype>
#include <system_error>

#include <fmt/format.h>

#include "core/check.h"
#include "core/error.h"
#include "server/api_error.h"
#include "server/image_fetch.h"

namespace quatre::server {
namespace {

namespace fs = std::filesystem;
using tokenizer::JsonValue;

// "messages[i].content[j].image_url", or ".image" for {"type": "image", "image": ...} parts.
std::string image_field(const JsonValue& body, size_t i, size_t j) {
  std::string key = "image_url";
  const JsonValue* msgs = body.find("messages");
  if (msgs != nullptr && msgs->is_array() && i < msgs->as_array().size()) {
    const JsonValue* content = msgs->as_array()[i].is_object() ? msgs->as_array()[i].find("content") : nullptr;
    if (content != nullptr && content->is_array() && j < content->as_array().size() && content->as_array()[j].is_object()) {
      const JsonValue* type = content->as_array()[j].find("type");
      if (type != nullptr && type->is_string() && type->as_string() == "image") key = "image";
    }
  }
  return fmt::format("messages[{}].content[{}].{}", i, j, key);
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s, const std::string& field) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    const int hi = i + 2 < s.size() ? hex_digit(s[i + 1]) : -1, lo = i + 2 < s.size() ? hex_digit(s[i + 2]) : -1;
    if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) throw bad_field(field, "bad percent escape in the file:// URL");
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

// file:///abs/path (or file://localhost/abs/path), resolved (symlinks included) and required to lie under the
// allowed directory.
fs::path local_file(std::string_view url, const std::string& field, const ImageRules& rules) {
  if (rules.local_media_dir.empty()) {
    throw bad_field(field, "file:// image URLs are refused (start the server with --allowed-local-media-path DIR); send a data: URL");
  }
  std::string_view rest = url.substr(std::string_view("file://").size());
  if (rest.starts_with("localhost/")) rest.remove_prefix(std::string_view("localhost").size());
  if (!rest.starts_with("/")) throw bad_field(field, "expected file:///absolute/path");
  std::error_code ec;
  const fs::path root = fs::canonical(rules.local_media_dir, ec);
  if (ec) throw ApiError(500, fmt::format("--allowed-local-media-path {}: {}", rules.local_media_dir.string(), ec.message()));
  const fs::path path = fs::canonical(fs::path(percent_decode(rest, field)), ec);
  if (ec) throw bad_field(field, fmt::format("cannot read the image file: {}", ec.message()));
  const auto [r, p] = std::mismatch(root.begin(), root.end(), path.begin(), path.end());
  if (r != root.end()) throw bad_field(field, "the file is outside the directory given by --allowed-local-media-path");
  if (!fs::is_regular_file(path, ec)) throw bad_field(field, "not a regular file");
  return path;
}

vision::RgbImage decode(const std::string& source, const std::string& field, const ImageRules& rules) {
  std::string scheme = source.substr(0, std::min<size_t>(source.size(), 8));
  std::transform(scheme.begin(), scheme.end(), scheme.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  const bool is_remote = scheme.starts_with("http://") || scheme.starts_with("https://");
  if (is_remote && !rules.allow_remote) {
    throw bad_field(field, "remote image URLs are refused (start the server with --allow-remote-images); send a data: URL");
  }
  try {
    if (is_remote) {
      const std::string bytes = fetch_image(source, {.max_bytes = rules.limits.max_encoded_bytes, .timeout = rules.fetch_timeout,
                                                     .allow_private_hosts = rules.allow_private_hosts, .refused_range = private_range});
      return vision::decode_image(bytes, field, rules.limits);
    }
    if (source.starts_with("file:")) {
      if (!source.starts_with("file://")) throw bad_field(field, "expected file:///absolute/path");
      return vision::decode_file(local_file(source, field, rules), rules.limits);
    }
    return vision::decode_data_url(source, field, rules.limits);  // a data: URL or bare base64
  } catch (const ApiError&) {
    throw;
  } catch (const InvalidRequest& e) {
    const std::string_view m = e.what();
    throw ApiError(400, m.starts_with(field) ? std::string(m) : fmt::format("{}: {}", field, m), field);
  }
}

}  // namespace

ImageRules ImageRules::from(const ServerOptions& options) {
  return {.allow_remote = options.allow_remote_images,
          .allow_private_hosts = options.allow_private_image_hosts,
          .fetch_timeout = std::chrono::milliseconds(static_cast<int64_t>(options.image_fetch_timeout_seconds * 1000)),
          .local_media_dir = options.allowed_local_media_path,
          .max_images = options.limits.max_images,
          .limits = {}};
}

RequestImages RequestImages::read(tokenizer::ChatRequest& chat, const JsonValue& body, const ImageRules& rules,
                                  const vision::VisionModel* vision, std::string_view no_vision) {
  RequestImages out;
  int64_t n_images = 0;  // counted before any is decoded
  for (const tokenizer::Message& m : chat.messages) {
    if (const auto* chunks = std::get_if<std::vector<tokenizer::Chunk>>(&m.content)) {
      n_images += std::count_if(chunks->begin(), chunks->end(), [](const tokenizer::Chunk& c) { return std::holds_alternative<tokenizer::ImageChunk>(c); });
    }
  }
  if (n_images > rules.max_images) throw bad_field("messages", fmt::format("at most {} images per request, got {}", rules.max_images, n_images));
  for (size_t i = 0; i < chat.messages.size(); ++i) {
    auto* chunks = std::get_if<std::vector<tokenizer::Chunk>>(&chat.messages[i].content);
    if (chunks == nullptr) continue;
    for (size_t j = 0; j < chunks->size(); ++j) {
      auto* image = std::get_if<tokenizer::ImageChunk>(&(*chunks)[j]);
      if (image == nullptr) continue;
      const std::string field = image_field(body, i, j);
      if (vision == nullptr) throw bad_field(field, no_vision.empty() ? "this model has no vision tower: it does not take images" : no_vision);
      const auto it = out.by_source_.find(image->source);
      const size_t k = it != out.by_source_.end() ? it->second : out.pixels_.size();
      if (it == out.by_source_.end()) {
        out.pixels_.push_back(vision::preprocess(decode(image->source, field, rules), vision->config()));
        out.by_source_.emplace(image->source, k);
      }
      const vision::PixelValues& px = out.pixels_[k];
      image->size = tokenizer::ImageSize{.width = static_cast<int>(px.width), .height = static_cast<int>(px.height)};
    }
  }
  return out;
}

std::vector<float> RequestImages::features(const std::vector<tokenizer::PromptImage>& order, const vision::VisionModel& vision) const {
  // Each distinct image once (images never attend to each other), then its rows wherever the prompt has it.
  const std::vector<float> all = vision.image_features(pixels_);
  const auto D = static_cast<size_t>(vision.text_hidden());
  const int64_t cell = vision.config().patch_size * vision.config().spatial_merge_size;
  std::vector<size_t> begin;  // [pixels_.size() + 1] first row of each image in `all`
  begin.push_back(0);
  for (const vision::PixelValues& px : pixels_) begin.push_back(begin.back() + static_cast<size_t>((px.height / cell) * (px.width / cell)));
  CHECK(begin.back() * D == all.size()) << "vision features: " << all.size() << " values for " << begin.back() << " rows of " << D;
  std::vector<float> out;
  for (const tokenizer::PromptImage& image : order) {
    const size_t k = by_source_.at(image.source);
    out.insert(out.end(), all.begin() + static_cast<std::ptrdiff_t>(begin[k] * D), all.begin() + static_cast<std::ptrdiff_t>(begin[k + 1] * D));
  }
  return out;
}

}  // namespace quatre::server
