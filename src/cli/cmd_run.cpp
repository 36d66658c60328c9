// `quatre run`: one prompt through the model, streamed to the terminal (reasoning dimmed on a terminal),
// with the sampling options and tokens/s at the end. Wiring only: the work is in model/, engine/, tokenizer/.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/run_images.h"
#include "cli/model_loader.h"
#include "core/backend.h"
#include "core/error.h"
#include "engine/generate.h"
#include "io/checkpoint.h"
#include "model/kv_cache.h"
#include "model/text_model.h"
#include "model/text_weights.h"
#include "tokenizer/chat_render.h"
#include "tokenizer/chat_request.h"
#include "tokenizer/output_parser.h"

namespace quatre::cli {
namespace {

struct RunArgs {
  ModelOptions model;
  std::string prompt;
  std::string system;
  std::string reasoning_effort;
  bool raw = false;
  int32_t max_tokens = 256;
  float temperature = 0.7f;
  float top_p = 1.0f;
  int32_t top_k = 0;
  float min_p = 0.0f;
  int64_t seed = -1;
  bool show_prompt = false;
  std::vector<std::string> images;  // --image, in prompt order
  std::string kv_dtype = "f32";
};

// Prints the parser's deltas: reasoning dimmed on a terminal, content as is, tool calls on their own lines.
class TerminalPrinter {
 public:
  explicit TerminalPrinter(bool is_tty) : is_tty_(is_tty) {}
  void print(const tokenizer::OutputDelta& d) {
    using Kind = tokenizer::OutputDelta::Kind;
    switch (d.kind) {
      case Kind::kReasoning:
        enter(Section::kReasoning);
        std::fputs(d.text.c_str(), stdout);
        break;
      case Kind::kContent:
        enter(Section::kContent);
        std::fputs(d.text.c_str(), stdout);
        break;
      case Kind::kToolCallStart:
        enter(Section::kTool);
        std::printf("\n[tool call %s] %s ", d.tool_call_id.c_str(), d.name.c_str());
        break;
      case Kind::kToolCallArguments:
        std::fputs(d.text.c_str(), stdout);
        break;
    }
    std::fflush(stdout);
  }
  void end() {
    enter(Section::kContent);
    std::fputs("\n", stdout);
    std::fflush(stdout);
  }

 private:
  enum class Section { kContent, kReasoning, kTool };
  void enter(Section s) {
    if (s == section_) return;
    if (is_tty_ && section_ == Section::kReasoning) std::fputs("\x1b[0m", stdout);
    if (section_ == Section::kReasoning) std::fputs("\n", stdout);
    if (is_tty_ && s == Section::kReasoning) std::fputs("\x1b[2m", stdout);
    section_ = s;
  }
  bool is_tty_;
  Section section_ = Section::kContent;
};

int run(const RunArgs& a) {
  const auto loaded = std::make_unique<LoadedModel>(a.model);
  const tokenizer::Tekken& tekken = loaded->tekken;

  std::string prompt_text = a.prompt;
  if (prompt_text == "-") prompt_text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  const PromptImages images = encode_prompt_images(a.images, loaded->checkpoint, loaded->backend->device(),
                                                    vision_options(loaded->model.options()));
  std::vector<int32_t> prompt;
  if (a.raw) {
    prompt.push_back(tekken.bos_id());
    for (const std::vector<int32_t>& ids : images.token_ids) prompt.insert(prompt.end(), ids.begin(), ids.end());
    for (int32_t id : tekken.encode(prompt_text)) prompt.push_back(id);
  } else {
    tokenizer::ChatRequest request;
    auto message = [](tokenizer::Role role, const std::string& content) {
      tokenizer::Message m;
      m.role = role;
      m.content = content;
      return m;
    };
    if (!a.system.empty()) request.messages.push_back(message(tokenizer::Role::kSystem, a.system));
    request.messages.push_back(message(tokenizer::Role::kUser, prompt_text));
    if (!images.chunks.empty()) {  // the images first, then the text
      std::vector<tokenizer::Chunk> chunks(images.chunks.begin(), images.chunks.end());
      chunks.push_back(tokenizer::TextChunk{.text = prompt_text});
      request.messages.back().content = std::move(chunks);
    }
    if (!a.reasoning_effort.empty()) request.reasoning_effort = a.reasoning_effort;
    tokenizer::validate_chat_request(request);
    const tokenizer::RenderedPrompt rendered = tokenizer::render_chat(request, tekken);
    prompt = rendered.ids;
    if (a.show_prompt) std::fprintf(stderr, "prompt: %s\n", rendered.text.c_str());
  }

  engine::GenerateRequest request;
  request.prompt = prompt;
  request.max_tokens = a.max_tokens;
  request.image_embeddings = images.features;
  if (const auto& vc = loaded->checkpoint.config().vision) request.image_token_id = static_cast<int32_t>(vc->image_token_id);
  request.sampling.temperature = a.temperature;
  request.sampling.top_p = a.top_p;
  request.sampling.top_k = a.top_k;
  request.sampling.min_p = a.min_p;
  if (a.seed >= 0) request.sampling.seed = static_cast<uint64_t>(a.seed);

  const engine::GenerateOptions options{.kv_dtype = model::parse_kv_dtype(a.kv_dtype)};
  TerminalPrinter printer(::isatty(STDOUT_FILENO) != 0);
  tokenizer::StreamingOutputParser parser(tekken, tokenizer::random_tool_call_ids());
  const engine::GenerateResult result = engine::generate(loaded->model, request, tekken.eos_id(), [&](int32_t id) {
    for (const tokenizer::OutputDelta& d : parser.push(id)) printer.print(d);
    return true;
  }, options);
  for (const tokenizer::OutputDelta& d : parser.finish()) printer.print(d);
  printer.end();

  const double n_new = static_cast<double>(result.ids.size());
  std::fprintf(stderr, "quatre: %lld prompt tokens in %.3f s (%.1f tok/s), %zu generated in %.3f s (%.1f tok/s), finish: %s\n",
               static_cast<long long>(result.n_prompt_tokens), result.prefill_seconds,
               static_cast<double>(result.n_prompt_tokens) / std::max(result.prefill_seconds, 1e-9), result.ids.size(),
               result.decode_seconds, n_new > 1 ? (n_new - 1) / std::max(result.decode_seconds, 1e-9) : 0.0,
               engine::finish_reason_name(result.finish));
  return 0;
}

}  // namespace

Runner add_run(CLI::App& app) {
  auto a = std::make_shared<RunArgs>();
  add_model_options(app, a->model);
  app.add_option("-p,--prompt", a->prompt, "The user message (\"-\" reads standard input)")->required();
  app.add_flag("--raw", a->raw, "Plain text completion: <s> + the prompt, no chat template");
  app.add_option("--system", a->system, "A system prompt");
  app.add_option("--reasoning-effort", a->reasoning_effort, "none or high (default: the tokenizer's, none)");
  app.add_option("-n,--max-tokens", a->max_tokens, "Most tokens to generate")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--temperature", a->temperature, "0 is greedy")->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--top-p", a->top_p, "Nucleus sampling mass, (0, 1]")->capture_default_str();
  app.add_option("--top-k", a->top_k, "Keep the k most likely tokens (0: off)")->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--min-p", a->min_p, "Drop tokens below min-p times the most likely one's probability")->capture_default_str();
  app.add_option("--seed", a->seed, "Seed for reproducible sampling (default: random)");
  app.add_option("--image", a->images, "An image file (PNG, JPEG, WebP, GIF) placed before the prompt text; repeatable")
      ->check(CLI::ExistingFile);
  app.add_flag("--show-prompt", a->show_prompt, "Print the rendered prompt (special tokens by name) to stderr");
  app.add_option("--kv-dtype", a->kv_dtype, "KV cache element type: f32, bf16 or fp8 (E4M3, scale 1)")
      ->check(CLI::IsMember({"f32", "bf16", "fp8"}))->capture_default_str();
  return [a] { return run(*a); };
}

}  // namespace quatre::cli
