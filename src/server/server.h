// Server: `quatre serve`'s HTTP server (PROTOCOL §4) on cpp-httplib. The listener comes up first and answers
// /health 503 until set_ready() hands it a loaded model; then chat and text completions go through the
// EngineLoop. One thread per connection (up to max_connections at once), so idle or slow clients never
// block others. Depends on engine, tokenizer and the rest of server/.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "engine/engine_loop.h"
#include "server/request_params.h"
#include "tokenizer/tekken.h"

namespace quatre::vision {
class VisionModel;
}  // namespace quatre::vision

namespace quatre::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: any free port (bind() returns it)
  std::string api_key;  // "": no authentication
  std::string served_model_name = "quatre";
  std::string cors_origin;  // "": no CORS headers (browsers refuse cross-origin calls)
  bool allow_remote_images = false;         // http(s) image URLs are fetched (image_fetch.h); else refused
  bool allow_private_image_hosts = false;   // ... also from loopback, private and link-local addresses
  double image_fetch_timeout_seconds = 10;  // a whole fetch: resolving, connecting, redirects, reading
  std::string allowed_local_media_path;  // file:// image URLs under this directory; "": refused
  size_t max_body_bytes = 32 << 20;
  int max_connections = 4096;
  int keep_alive_seconds = 5;          // an idle connection is closed after this long (also bounds the drain)
  double sse_keep_alive_seconds = 5;   // a ": keep-alive" comment after this long without a chunk
  Limits limits;
};

// What the server serves once the model is loaded. Not owned.
struct ServingModel {
  const tokenizer::Tekken* tekken = nullptr;
  engine::Engine* engine = nullptr;  // read on the engine thread only (through output callbacks)
  engine::EngineLoop* loop = nullptr;
  int64_t max_model_len = 0;
  // The checkpoint's vision tower (run by the connection's thread, on the model's device); null: image parts get 400
  // with `no_vision` ("" says the model has no tower).
  const vision::VisionModel* vision = nullptr;
  std::string no_vision;
};

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the listening socket and returns its port. Throws LoadError when the address cannot be bound.
  int bind();
  // Serves on a thread of its own until stop().
  void start();
  void set_ready(const ServingModel& model);
  // Graceful shutdown: new generation requests get 503, the ones in flight finish (streams to their end),
  // then stop().
  void drain();
  // Stops accepting and joins; responses still being written are cut. Idempotent.
  void stop();
  std::string url() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace quatre::server
