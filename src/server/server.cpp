// Server: routes, authentication, CORS, the connection threads, and the simple endpoints (/health, /version,
// /metrics, /v1/models, /tokenize, /detokenize). Chat and text completions are in completion_endpoints.cpp.
#include "server/server.h"

#include <sys/socket.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <httplib.h>

#include "core/error.h"
#include "server/api_error.h"
#include "server/endpoints.h"
#include "server/sse.h"
#include "tokenizer/chat_render.h"
#include "tokenizer/chat_request.h"
#include "web/chat_page.h"

namespace quatre::server {
namespace {

// One thread per connection, at most `max` at once (the accept loop waits for room beyond that). A waiting
// keep-alive connection costs a thread, not the pool: idle clients never starve others.
class ThreadPerConnection : public httplib::TaskQueue {
 public:
  explicit ThreadPerConnection(int max) : state_(std::make_shared<State>()), max_(max) {}
  void enqueue(std::function<void()> fn) override {
    std::unique_lock lock(state_->mutex);
    state_->room.wait(lock, [&] { return state_->active < max_; });
    ++state_->active;
    std::thread([state = state_, fn = std::move(fn)] {
      fn();
      std::lock_guard done(state->mutex);
      --state->active;
      state->room.notify_all();
    }).detach();
  }
  void shutdown() override {
    std::unique_lock lock(state_->mutex);
    state_->room.wait(lock, [&] { return state_->active == 0; });
  }

 private:
  struct State {
    std::mutex mutex;
    std::condition_variable room;
    int active = 0;
  };
  std::shared_ptr<State> state_;  // shared with the threads, which may outlive this object by a few instructions
  int max_;
};

// A POST body, read here whatever its Content-Type or framing: left to cpp-httplib 0.11, an
// application/x-www-form-urlencoded body (curl -d's default) over 8 KiB would get a bare 413, and a chunked body
// would be read without any limit. ApiError 413 beyond `limit` bytes; 400 for a multipart or badly framed body.
// Bytes past the limit are read and dropped (as cpp-httplib does for a Content-Length over it), so the rest of the
// body is never taken for the connection's next request.
std::string read_body(const httplib::Request& req, const httplib::Response& res, const httplib::ContentReader& read, size_t limit) {
  if (req.is_multipart_form_data()) throw ApiError(400, "request body: expected JSON (Content-Type: application/json), got multipart/form-data");
  std::string body;
  bool is_too_large = false;
  const bool is_read = read([&](const char* data, size_t n) {
    is_too_large = is_too_large || n > limit - body.size();
    if (!is_too_large) body.append(data, n);
    return true;
  });
  if (is_too_large || res.status == 413) throw ApiError(413, fmt::format("request body too large (at most {} bytes)", limit));
  if (!is_read) throw ApiError(400, "request body: cut short or badly framed (Content-Length or chunked encoding)");
  return body;
}

}  // namespace

struct Server::Impl {
  explicit Impl(ServerOptions o) { context.options = std::move(o); }
  Context context;
  httplib::Server http;
  std::thread thread;
  int port = 0;
  bool is_stopped = false;
  std::atomic<bool> has_listened = false;  // listen_after_bind() returned
  int listen_socket = -1;                   // the socket bind() listens on (set by cpp-httplib's socket callback)

  void routes();
  bool is_authorized(const httplib::Request& req) const {
    return context.options.api_key.empty() || req.get_header_value("Authorization") == "Bearer " + context.options.api_key;
  }
  static ApiError unauthorized() { return ApiError(401, "Incorrect or missing API key (Authorization: Bearer <key>)"); }
  // Runs `body`, mapping errors to OpenAI error objects, and counts the request in the metrics.
  void handle(const char* endpoint, httplib::Response& res, const std::function<void()>& body);
};

void Server::Impl::handle(const char* endpoint, httplib::Response& res, const std::function<void()>& body) {
  auto fail = [&](const ApiError& e) {
    res.status = e.status();
    res.set_content(dump(error_body(e)), "application/json");
  };
  try {
    body();
  } catch (const ApiError& e) {
    fail(e);
  } catch (const InvalidRequest& e) {
    fail(from_invalid_request(e));
  } catch (const std::exception& e) {
    fail(ApiError(500, fmt::format("internal error: {}", e.what())));
  }
  context.metrics.count_request(endpoint, res.status);
}

void Server::Impl::routes() {
  const ServerOptions& o = context.options;
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const ServerOptions& opt = context.options;
    if (!opt.cors_origin.empty()) {
      res.set_header("Access-Control-Allow-Origin", opt.cors_origin);
      res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
      res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
      if (req.method == "OPTIONS") {
        res.status = 204;
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    // The chat page itself is public: it asks for the key and sends it on its API calls.
    const bool is_public = req.path == "/health" || req.path == "/" || req.path == "/index.html";
    // POST: checked by the handler, which drops the body first (unread, it would be taken for the next request).
    if (is_authorized(req) || is_public || req.method == "POST") return httplib::Server::HandlerResponse::Unhandled;
    res.status = 401;
    res.set_content(dump(error_body(unauthorized())), "application/json");
    context.metrics.count_request("auth", 401);
    return httplib::Server::HandlerResponse::Handled;
  });
  // Statuses cpp-httplib sets itself (no handler ran): say what was wrong with the request.
  http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string message;
    switch (res.status) {
      case 404: message = fmt::format("{} {}: not found", req.method, req.path); break;
      case 413: message = "request body too large"; break;
      case 414: message = "request URI too long (at most 8192 bytes)"; break;
      case 400: message = "malformed HTTP request: bad request line, a header line over 8 KiB, or bad body framing"; break;
      default: message = fmt::format("{} {}: HTTP {}", req.method, req.path, res.status);
    }
    res.set_content(dump(error_body(ApiError(res.status, message))), "application/json");
  });

  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (context.is_ready()) {
      res.status = 200;
    } else {
      res.status = 503;
      res.set_content(dump(error_body(ApiError(503, "the model is loading"))), "application/json");
    }
  });
  // The built-in chat page (web/): one self-contained file, so everything else may be refused to it.
  auto chat_page = [](const httplib::Request&, httplib::Response& res) {
    res.set_header("Content-Security-Policy",
                   "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; "
                   "connect-src 'self'; base-uri 'none'; form-action 'none'");
    res.set_header("Cache-Control", "no-cache");
    res.set_content(std::string(web::chat_page()), "text/html; charset=utf-8");
  };
  http.Get("/", chat_page);
  http.Get("/index.html", chat_page);
  http.Get("/version", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"version": "0.1.0"})", "application/json");
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(context.metrics.text(), "text/plain; version=0.0.4");
  });
  http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    handle("models", res, [&] { res.set_content(dump(models_json(context, {})), "application/json"); });
  });
  http.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
    handle("models", res, [&] { res.set_content(dump(models_json(context, req.matches[1].str())), "application/json"); });
  });
  auto post = [this](const char* path, const char* endpoint, void (*run)(Context&, const httplib::Request&, httplib::Response&)) {
    http.Post(path, [this, endpoint, run](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& read) {
      handle(endpoint, res, [&] {
        if (!is_authorized(req)) {
          if (!req.is_multipart_form_data()) read([](const char*, size_t) { return true; });
          throw unauthorized();
        }
        httplib::Request with_body = req;
        with_body.body = read_body(req, res, read, context.options.max_body_bytes);
        run(context, with_body, res);
      });
    });
    http.Get(path, [this, endpoint](const httplib::Request& req, httplib::Response& res) {
      handle(endpoint, res, [&] { throw ApiError(405, fmt::format("{}: use POST", req.path)); });
    });
  };
  post("/v1/chat/completions", "chat", serve_chat);
  post("/v1/completions", "completions", serve_completion);
  post("/tokenize", "tokenize", serve_tokenize);
  post("/detokenize", "detokenize", serve_detokenize);
  http.set_payload_max_length(o.max_body_bytes);
  http.set_keep_alive_timeout(o.keep_alive_seconds);
  // cpp-httplib closes a keep-alive connection after 5 requests by default: a client's pooled connection was
  // reopened every fifth request. nginx's default, 1000.
  http.set_keep_alive_max_count(1000);
  http.set_read_timeout(o.keep_alive_seconds);
  const int max_connections = o.max_connections;
  http.new_task_queue = [max_connections] { return new ThreadPerConnection(max_connections); };
  http.set_socket_options([this](socket_t sock) {
    httplib::default_socket_options(sock);
    listen_socket = sock;
  });
}

// cpp-httplib 0.11 listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, compiled into Debian's library): 200
// clients connecting at once overflowed the accept queue ~400 times (TcpExtListenOverflows), each drop costing its
// client a second or more of handshake retransmission, and under load a connection reset minutes later. Linux takes
// a second listen() on the bound socket as its new backlog.
constexpr int kListenBacklog = 4096;

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) { impl_->routes(); }

Server::~Server() { stop(); }

int Server::bind() {
  const ServerOptions& o = impl_->context.options;
  if (o.port == 0) {
    impl_->port = impl_->http.bind_to_any_port(o.host);
  } else {
    impl_->port = impl_->http.bind_to_port(o.host, o.port) ? o.port : -1;
  }
  if (impl_->port <= 0) throw LoadError(fmt::format("serve: cannot listen on {}:{} (in use, or not an address of this host)", o.host, o.port));
  if (impl_->listen_socket < 0 || ::listen(impl_->listen_socket, kListenBacklog) != 0) {
    throw LoadError(fmt::format("serve: cannot set the backlog of {}:{} to {}: {}", o.host, impl_->port, kListenBacklog,
                                impl_->listen_socket < 0 ? "no socket" : std::strerror(errno)));
  }
  return impl_->port;
}

void Server::start() {
  impl_->thread = std::thread([this] {
    impl_->http.listen_after_bind();
    impl_->has_listened = true;
  });
}

void Server::set_ready(const ServingModel& model) { impl_->context.set_ready(model); }

void Server::drain() {
  impl_->context.draining = true;
  while (impl_->context.n_in_flight.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  stop();
}

void Server::stop() {
  if (impl_->is_stopped) return;
  impl_->is_stopped = true;
  // cpp-httplib's stop() does nothing until the listener thread has started accepting (a model that fails to load
  // stops the server right after start()): repeat it until that thread has returned.
  while (impl_->thread.joinable() && !impl_->has_listened) {
    impl_->http.stop();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (impl_->thread.joinable()) impl_->thread.join();
}

std::string Server::url() const { return fmt::format("http://{}:{}", impl_->context.options.host, impl_->port); }

}  // namespace quatre::server
