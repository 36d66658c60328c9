// The images of a chat request, on the connection's thread before anything reaches the engine: each image part
// is checked against the server's rules (data: URLs and bare base64; file:// URLs only under
// --allowed-local-media-path; http(s) URLs only with --allow-remote-images, fetched by image_fetch.h), decoded with
// src/vision's limits and preprocessed; its chunk gets the preprocessed size, so the renderer lays out exactly the [IMG] grid the encoder
// makes features for; then features() runs the vision tower (on the model's device) over the prompt's images in prompt
// order. Depends on server/api_error, tokenizer, vision.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "server/server.h"
#include "tokenizer/chat_render.h"
#include "tokenizer/chat_request.h"
#include "tokenizer/json_value.h"
#include "vision/decode.h"
#include "vision/preprocess.h"
#include "vision/vision_model.h"

namespace quatre::server {

struct ImageRules {
  bool allow_remote = false;                  // --allow-remote-images: http(s) URLs are fetched; else refused
  bool allow_private_hosts = false;           // --allow-private-image-hosts: also from loopback, private, ... addresses
  std::chrono::milliseconds fetch_timeout{10'000};  // --image-fetch-timeout: a whole fetch, redirects included
  std::filesystem::path local_media_dir;      // --allowed-local-media-path: file:// URLs under it; empty: refused
  int32_t max_images = 8;                     // per request
  vision::DecodeLimits limits;                // bytes, sides, pixels
  static ImageRules from(const ServerOptions& options);
};

class RequestImages {
 public:
  // Reads every image part of `chat` (whose messages are those of `body`, which names each part's field) and
  // sets its size. Throws ApiError 400 naming `messages[i].content[j].image_url` (or `.image`) for a refused URL,
  // an unreadable file, a failed fetch, data that is not an image, one over a limit, no tower (`vision` null: `no_vision` says
  // why, "" that the model has none), or more than max_images images.
  static RequestImages read(tokenizer::ChatRequest& chat, const tokenizer::JsonValue& body, const ImageRules& rules,
                            const vision::VisionModel* vision, std::string_view no_vision = {});

  bool empty() const { return pixels_.empty(); }
  // The features of the rendered prompt's images, in its order: [Σ [IMG] tokens, D]. Each image of `order` must
  // be one read() saw (a source it read).
  std::vector<float> features(const std::vector<tokenizer::PromptImage>& order, const vision::VisionModel& vision) const;

 private:
  std::unordered_map<std::string, size_t> by_source_;  // an image sent twice is decoded once
  std::vector<vision::PixelValues> pixels_;
};

}  // namespace quatre::server
