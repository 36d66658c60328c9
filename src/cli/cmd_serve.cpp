// `quatre serve`: the OpenAI/Mistral-compatible HTTP server. Binds the port first (GET /health answers 503
// while the model loads), loads the model, runs the engine on its thread, and on SIGTERM/SIGINT stops
// accepting, lets the requests in flight finish and exits 0. Wiring only: the work is in server/ and engine/.
#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <memory>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/kv_sizing.h"
#include "cli/model_loader.h"
#include "cli/run_images.h"
#include "engine/engine.h"
#include "engine/engine_loop.h"
#include "server/server.h"

namespace quatre::cli {
namespace {

struct ServeArgs {
  ModelOptions model;
  server::ServerOptions server;
  int64_t max_model_len = 0;
  KvSizing kv;
  int64_t max_num_seqs = 64;
  int64_t max_num_batched_tokens = 512;
  uint64_t seed = 0;
  int64_t max_body_mib = 32;
};

int serve(ServeArgs& a) {
  // Signals are taken by sigwait() below: block them before any thread starts, so every thread inherits it.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  // A descriptor per connection: raise the soft limit to the hard one (often 1024 -> 1M).
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }

  a.server.max_body_bytes = static_cast<size_t>(a.max_body_mib) << 20;
  (void)kv_cache_dtype(a.kv, Device::kCpu);  // a bad --kv-cache-dtype fails before the port is taken
  server::Server http(a.server);
  http.bind();
  http.start();
  std::fprintf(stderr, "quatre serve: listening on %s, loading the model...\n", http.url().c_str());

  const auto loaded = std::make_unique<LoadedModel>(a.model);
  // null: no tower
  std::unique_ptr<vision::VisionModel> vision =
      load_vision_model(loaded->checkpoint, loaded->backend->device(), vision_options(loaded->model.options()));
  std::string no_vision;
  if (vision && !loaded->backend->can_set_rows()) {  // its features could not be spliced: refuse images up front
    no_vision = fmt::format("images are not supported on --device {} yet (the backend cannot splice image features)", a.model.device);
    vision.reset();
  }
  // On a GPU the tower's scratch for one image of the largest size is taken now, before the KV cache is sized from
  // what is left (a larger request grows it into the memory --gpu-memory-utilization leaves).
  if (vision && vision->device() != Device::kCpu) vision->warm_up();
  engine::EngineOptions options;
  options.max_context = a.max_model_len;
  options.max_running = a.max_num_seqs;
  options.max_tokens_per_step = a.max_num_batched_tokens;
  options.eos_id = loaded->tekken.eos_id();
  options.seed = a.seed;
  std::fprintf(stderr, "quatre serve: %s\n", size_kv_cache(loaded->model, a.kv, options).c_str());
  engine::Engine engine(loaded->model, options);
  engine::EngineLoop loop(engine);
  http.set_ready({.tekken = &loaded->tekken, .engine = &engine, .loop = &loop, .max_model_len = engine.max_context(),
                  .vision = vision.get(), .no_vision = no_vision});
  std::printf("quatre serve: %s ready on %s (%s)\n", a.server.served_model_name.c_str(), http.url().c_str(), engine.capacity_line().c_str());
  std::fflush(stdout);

  int signal = 0;
  sigwait(&signals, &signal);
  std::fprintf(stderr, "quatre serve: %s, finishing the requests in flight\n", signal == SIGTERM ? "SIGTERM" : "SIGINT");
  http.drain();
  loop.stop();
  return 0;
}

}  // namespace

Runner add_serve(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  add_model_options(app, a->model);
  server::ServerOptions& s = a->server;
  app.add_option("--host", s.host, "Address to listen on")->capture_default_str();
  app.add_option("--port", s.port, "Port to listen on (0: any free port)")->capture_default_str();
  app.add_option("--api-key", s.api_key, "Require 'Authorization: Bearer KEY' on every endpoint but /health")->envname("QUATRE_API_KEY");
  app.add_option("--served-model-name", s.served_model_name, "The model id clients send and /v1/models lists")->capture_default_str();
  app.add_option("--max-model-len", a->max_model_len, "Context length in tokens (default: the model's, within the KV cache)");
  app.add_option("--kv-cache-mib", a->kv.kv_cache_mib, "KV cache memory in MiB (default: 1024 on the CPU; on a GPU what --gpu-memory-utilization leaves)")
      ->check(CLI::PositiveNumber);
  app.add_option("--gpu-memory-utilization", a->kv.gpu_memory_utilization,
                 "Fraction of the GPU's memory for weights, one step's activations and the KV cache")->capture_default_str();
  app.add_option("--kv-cache-dtype", a->kv.kv_cache_dtype, "KV cache element type: auto (bf16 on a GPU, f32 on the CPU), f32, bf16 or fp8")
      ->capture_default_str();
  app.add_option("--max-num-seqs", a->max_num_seqs, "Sequences in the running batch at once")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--max-num-batched-tokens", a->max_num_batched_tokens, "Token budget of one engine step")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--seed", a->seed, "Seeds the requests that carry no seed")->capture_default_str();
  app.add_option("--cors-origin", s.cors_origin, "Allow browser calls from this origin (default: CORS off)");
  app.add_flag("--allow-remote-images", s.allow_remote_images,
               "Fetch http(s) image URLs (at most 3 redirects, the image byte limit; public hosts only unless --allow-private-image-hosts)");
  app.add_flag("--allow-private-image-hosts", s.allow_private_image_hosts,
               "With --allow-remote-images: also fetch from loopback, private, link-local and other non-public addresses");
  app.add_option("--image-fetch-timeout", s.image_fetch_timeout_seconds, "Seconds for a whole image fetch (connect, redirects, read)")
      ->check(CLI::Range(0.001, 3600.0))->capture_default_str();
  app.add_option("--allowed-local-media-path", s.allowed_local_media_path, "Accept file:// image URLs of files under this directory")
      ->check(CLI::ExistingDirectory);
  app.add_option("--max-connections", s.max_connections, "Connections served at once (a thread each)")->capture_default_str();
  app.add_option("--max-body-mib", a->max_body_mib, "Largest request body in MiB (larger: 413)")->check(CLI::Range(1, 4096))->capture_default_str();
  return [a] { return serve(*a); };
}

}  // namespace quatre::cli
