// The server's shared state (Context) and its endpoint functions; server.cpp routes HTTP requests to them.
// Internal to server/. Depends on httplib, server/metrics, server/server.
#pragma once

#include <atomic>
#include <string>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "grammar/vocabulary.h"
#include "server/metrics.h"
#include "server/server.h"
#include "tokenizer/json_value.h"

namespace quatre::server {

struct Context {
  ServerOptions options;
  Metrics metrics;
  ServingModel model;  // valid once is_ready()
  std::shared_ptr<const grammar::Vocabulary> vocab;  // the token bytes constrained decoding masks over
  std::atomic<bool> ready = false;
  std::atomic<bool> draining = false;  // SIGTERM: new generation requests get 503
  std::atomic<int> n_in_flight = 0;    // generation requests not yet answered in full

  // Counts one generation request in flight until the returned guard is dropped; 503 while draining.
  std::shared_ptr<void> in_flight_guard();

  bool is_ready() const { return ready.load(std::memory_order_acquire); }
  void set_ready(const ServingModel& m) {
    model = m;
    vocab = std::make_shared<const grammar::Vocabulary>(*m.tekken);
    ready.store(true, std::memory_order_release);
  }
  // The model, or ApiError 503 while it loads.
  const ServingModel& require_model() const;
  // ApiError 404 (model_not_found) unless `model` is "" or the served name.
  void check_model_name(const std::string& model) const;
};

// The body as JSON (ApiError 400 when malformed or not an object).
tokenizer::JsonValue parse_body(const httplib::Request& req);

// GET /v1/models (id "") or /v1/models/{id}.
nlohmann::json models_json(const Context& context, const std::string& id);

void serve_chat(Context& context, const httplib::Request& req, httplib::Response& res);
void serve_completion(Context& context, const httplib::Request& req, httplib::Response& res);
void serve_tokenize(Context& context, const httplib::Request& req, httplib::Response& res);
void serve_detokenize(Context& context, const httplib::Request& req, httplib::Response& res);

}  // namespace quatre::server
