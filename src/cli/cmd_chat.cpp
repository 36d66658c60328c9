// `quatre chat`: an interactive terminal chat. Replies stream as they are sampled (reasoning dimmed, or collapsed
// by /thoughts hide); an Engine keeps the conversation's KV blocks in its prefix cache, so each turn computes only
// its new tokens; /image attaches images (encoded once, on the model's device); Ctrl-C stops the reply being written,
// Ctrl-D (or /quit) leaves. Wiring only.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <random>
#include <string>

#include <fmt/format.h>

#include "cli/chat_session.h"
#include "cli/commands.h"
#include "cli/model_loader.h"
#include "cli/run_images.h"
#include "core/error.h"
#include "engine/engine.h"
#include "tokenizer/chat_render.h"
#include "tokenizer/output_parser.h"

namespace quatre::cli {
namespace {

std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) { g_interrupted.store(true); }

// SIGINT sets a flag instead of ending the program; without SA_RESTART a read in progress returns, so Ctrl-C
// at the prompt abandons the line.
void install_sigint_handler() {
  struct sigaction sa = {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  sigaction(SIGINT, &sa, nullptr);
}

struct ChatArgs {
  ModelOptions model;
  std::string system;
  std::string reasoning_effort;
  int32_t max_tokens = 2048;
  float temperature = 0.7f;
  float top_p = 0.95f;
  int64_t seed = -1;
  int64_t context = 16384;
  bool ignore_eos = false;
};

// The reply as it streams: reasoning dimmed (or one "[thinking...]" line when hidden), content as is, tool calls
// on lines of their own; keeps the reply's text for the conversation.
class ReplyPrinter {
 public:
  ReplyPrinter(bool is_tty, bool show_reasoning) : is_tty_(is_tty), show_reasoning_(show_reasoning) {}
  void print(const tokenizer::OutputDelta& d) {
    using Kind = tokenizer::OutputDelta::Kind;
    if (d.kind == Kind::kReasoning) {
      reasoning_ += d.text;
      if (!in_reasoning_) {
        in_reasoning_ = true;
        if (is_tty_) std::fputs("\x1b[2m", stdout);
        if (!show_reasoning_) std::fputs("[thinking...]", stdout);
      }
      if (show_reasoning_) std::fputs(d.text.c_str(), stdout);
    } else {
      leave_reasoning();
      if (d.kind == Kind::kContent) {
        content_ += d.text;
        std::fputs(d.text.c_str(), stdout);
      } else if (d.kind == Kind::kToolCallStart) {
        std::printf("\n[tool call] %s ", d.name.c_str());
      } else {
        std::fputs(d.text.c_str(), stdout);
      }
    }
    std::fflush(stdout);
  }
  void end() {
    leave_reasoning();
    std::fputs("\n", stdout);
    std::fflush(stdout);
  }
  std::string& content() { return content_; }
  std::string& reasoning() { return reasoning_; }

 private:
  void leave_reasoning() {
    if (!in_reasoning_) return;
    in_reasoning_ = false;
    if (is_tty_) std::fputs("\x1b[0m", stdout);
    std::fputs("\n", stdout);
  }
  bool is_tty_, show_reasoning_;
  bool in_reasoning_ = false;
  std::string content_, reasoning_;
};

struct ReplyStats {
  int64_t n_prompt = 0, n_cached = 0, n_generated = 0;
  double first_token_s = 0, total_s = 0;
  engine::FinishReason finish = engine::FinishReason::kStop;
};

ReplyStats reply(engine::Engine& engine, const tokenizer::Tekken& tekken, const ChatArgs& a, const ChatSession& session,
                 const ChatImages& images, ReplyPrinter& printer) {
  using Clock = std::chrono::steady_clock;
  const tokenizer::RenderedPrompt rendered = tokenizer::render_chat(
      session.request(), tekken, [&images](const tokenizer::ImageChunk& chunk, std::string_view) { return images.size(chunk.source); });
  engine::GenerateRequest request;
  request.prompt = rendered.ids;
  if (!rendered.images.empty()) {  // encoded when attached: the features of every image of the conversation
    request.image_embeddings = images.features(rendered.images);
    request.image_token_id = images.image_token_id();
  }
  request.max_tokens = a.max_tokens;
  request.ignore_eos = a.ignore_eos;
  request.sampling.temperature = a.temperature;
  request.sampling.top_p = a.top_p;
  if (a.seed >= 0) request.sampling.seed = static_cast<uint64_t>(a.seed);

  ReplyStats stats{.n_prompt = static_cast<int64_t>(rendered.ids.size())};
  const int64_t forwarded_before = engine.stats().n_forwarded_tokens;
  const Clock::time_point start = Clock::now();
  const int64_t id = engine.submit(std::move(request));
  tokenizer::StreamingOutputParser parser(tekken, tokenizer::random_tool_call_ids());
  bool done = false;
  g_interrupted.store(false);
  while (!done) {
    if (g_interrupted.exchange(false)) engine.cancel(id);
    for (const engine::RequestOutput& out : engine.step()) {
      if (out.id != id) continue;
      if (out.token.has_value()) {
        if (stats.n_generated++ == 0) stats.first_token_s = std::chrono::duration<double>(Clock::now() - start).count();
        for (const tokenizer::OutputDelta& d : parser.push(*out.token)) printer.print(d);
      }
      if (out.finish.has_value()) {
        done = true;
        stats.finish = *out.finish;
        if (*out.finish == engine::FinishReason::kError) throw Error("the reply failed: " + out.error);
      }
    }
  }
  for (const tokenizer::OutputDelta& d : parser.finish()) printer.print(d);
  printer.end();
  stats.total_s = std::chrono::duration<double>(Clock::now() - start).count();
  const int64_t computed = engine.stats().n_forwarded_tokens - forwarded_before - std::max<int64_t>(stats.n_generated - 1, 0);
  stats.n_cached = std::max<int64_t>(stats.n_prompt - computed, 0);
  return stats;
}

void print_stats(const ReplyStats& s) {
  const double decode_s = s.total_s - s.first_token_s;
  std::fprintf(stderr, "[%lld prompt tokens (%lld cached), first token in %.2f s; %lld generated, %.1f tok/s; %s]\n",
               static_cast<long long>(s.n_prompt), static_cast<long long>(s.n_cached), s.first_token_s,
               static_cast<long long>(s.n_generated),
               s.n_generated > 1 ? static_cast<double>(s.n_generated - 1) / std::max(decode_s, 1e-9) : 0.0,
               s.finish == engine::FinishReason::kCancelled ? "stopped" : engine::finish_reason_name(s.finish));
}

int chat(const ChatArgs& a) {
  const auto loaded = std::make_unique<LoadedModel>(a.model);
  const io::TextConfig& text = loaded->model.config();
  const int64_t context = std::min<int64_t>(a.context, text.max_position_embeddings);
  constexpr int64_t kBlockSize = 16;
  engine::Engine engine(loaded->model, {.n_blocks = (context + kBlockSize - 1) / kBlockSize * 2,
                                        .block_size = kBlockSize,
                                        .max_context = context,
                                        .eos_id = loaded->tekken.eos_id(),
                                        .seed = a.seed >= 0 ? static_cast<uint64_t>(a.seed) : std::random_device{}()});
  ChatImages images(loaded->checkpoint, loaded->backend->can_set_rows(), loaded->backend->device(),
                    vision_options(loaded->model.options()));
  ChatSession session;
  if (images.takes_images()) session.set_image_check([&images](const std::string& path) { return images.attach(path); });
  if (!a.system.empty()) session.handle("/system " + a.system);
  if (!a.reasoning_effort.empty()) session.handle("/reasoning " + a.reasoning_effort);

  const bool is_tty = ::isatty(STDOUT_FILENO) != 0;
  install_sigint_handler();
  std::fprintf(stderr, "quatre chat: %s on %s, context %lld tokens. /help for commands, Ctrl-D to leave.\n",
               loaded->dir.string().c_str(), a.model.device.c_str(), static_cast<long long>(context));
  MultilineReader reader;
  std::string line;
  while (true) {
    std::fputs(reader.pending() ? "... " : "> ", stdout);
    std::fflush(stdout);
    if (!std::getline(std::cin, line)) {
      // A read interrupted by Ctrl-C looks like end of input to the stream: the flag tells them apart.
      if (!g_interrupted.exchange(false)) break;
      std::cin.clear();  // Ctrl-C at the prompt: drop the line
      std::clearerr(stdin);
      reader.take();
      std::fputs("\n", stdout);
      continue;
    }
    reader.feed(line);
    if (!reader.complete()) continue;
    try {
      const ChatAction action = session.handle(reader.take());
      if (!action.message.empty()) std::printf("%s\n", action.message.c_str());
      if (action.kind == ChatAction::Kind::kQuit) break;
      if (action.kind != ChatAction::Kind::kGenerate) continue;
      ReplyPrinter printer(is_tty, session.show_reasoning());
      try {
        const ReplyStats stats = reply(engine, loaded->tekken, a, session, images, printer);
        session.add_reply(std::move(printer.content()), std::move(printer.reasoning()));
        print_stats(stats);
      } catch (...) {
        session.drop_unanswered_turn();
        throw;
      }
    } catch (const Error& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
    }
  }
  std::fputs("\n", stdout);
  return 0;
}

}  // namespace

Runner add_chat(CLI::App& app) {
  auto a = std::make_shared<ChatArgs>();
  add_model_options(app, a->model);
  app.add_option("--system", a->system, "A system prompt (/system changes it)");
  app.add_option("--reasoning-effort", a->reasoning_effort, "none or high (/reasoning changes it)")
      ->check(CLI::IsMember({"none", "high"}));
  app.add_option("-n,--max-tokens", a->max_tokens, "Most tokens per reply")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--temperature", a->temperature, "0 is greedy")->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--top-p", a->top_p, "Nucleus sampling mass, (0, 1]")->capture_default_str();
  app.add_option("--seed", a->seed, "Seed for reproducible replies (default: random)");
  app.add_option("--context", a->context, "Context length in tokens (capped at the model's)")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_flag("--ignore-eos", a->ignore_eos, "Keep generating past the end-of-sequence token (benchmarks, tests)");
  return [a] { return chat(*a); };
}

}  // namespace quatre::cli
