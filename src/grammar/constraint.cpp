// GrammarConstraint: the engine's TokenConstraint over an Automaton, and the factories of the product API.
#include "grammar/constraint.h"

#include <fmt/format.h>

#include <mutex>
#include <unordered_map>

#include "core/check.h"
#include "core/error.h"
#include "grammar/automaton.h"
#include "grammar/json_schema.h"
#include "grammar/token_mask.h"

namespace quatre::grammar {
namespace {

// What the clones of one constraint share: the automaton (lazily determinized) and the masks of its states.
struct Shared {
  Shared(std::shared_ptr<const Vocabulary> v, Grammar g) : vocab(std::move(v)), automaton(std::move(g)) {}
  std::shared_ptr<const Vocabulary> vocab;
  std::mutex mutex;
  Automaton automaton;
  std::unordered_map<int32_t, std::vector<uint64_t>> masks;  // state -> allowed ids
};

constexpr size_t kMaxCachedMasks = 4096;  // 16 KiB each at 131k ids

class GrammarConstraint final : public engine::TokenConstraint {
 public:
  explicit GrammarConstraint(std::shared_ptr<Shared> shared)
      : shared_(std::move(shared)), state_(shared_->automaton.start()) {}

  void mask(std::span<float> logits) override {
    std::lock_guard lock(shared_->mutex);
    if (ended_) {
      const int32_t eos = shared_->vocab->specials().eos;
      std::vector<uint64_t> only_eos((shared_->vocab->size() + 63) / 64, 0);
      only_eos[eos / 64] |= uint64_t{1} << (eos % 64);
      apply_token_mask(only_eos, logits);
      return;
    }
    auto it = shared_->masks.find(state_);
    if (it == shared_->masks.end()) {
      if (shared_->masks.size() >= kMaxCachedMasks) shared_->masks.clear();
      it = shared_->masks.emplace(state_, compute_token_mask(shared_->automaton, *shared_->vocab, state_)).first;
    }
    apply_token_mask(it->second, logits);
  }

  void accept(int32_t token) override {
    std::lock_guard lock(shared_->mutex);
    const Vocabulary& vocab = *shared_->vocab;
    if (token < 0 || token >= vocab.size()) {
      throw InvalidRequest(fmt::format("constrained decoding: token id {} is out of range [0, {})", token, vocab.size()));
    }
    if (ended_) throw InvalidRequest(fmt::format("constrained decoding: token {} after the end of the text", token));
    Automaton& a = shared_->automaton;
    if (token == vocab.specials().eos) {
      if (!a.accepting(state_)) refuse(token, "the text is not complete yet");
      ended_ = true;
      return;
    }
    int32_t next = Automaton::kDead;
    if (token < vocab.n_special()) {
      const int sym = vocab.special_symbol(token);
      if (sym >= 0) next = a.step(state_, sym);
    } else {
      next = a.step_bytes(state_, vocab.token_bytes(token));
    }
    if (next == Automaton::kDead) refuse(token, "it does not continue the text validly");
    state_ = next;
  }

  bool is_complete() const override {
    std::lock_guard lock(shared_->mutex);
    const Automaton& a = shared_->automaton;
    return ended_ || (a.accepting(state_) && a.next_symbols(state_).none());
  }

  std::unique_ptr<engine::TokenConstraint> clone() const override {
    std::lock_guard lock(shared_->mutex);
    return std::make_unique<GrammarConstraint>(*this);
  }

 private:
  [[noreturn]] void refuse(int32_t token, std::string_view why) const {
    throw InvalidRequest(fmt::format("constrained decoding: token {} is not allowed here: {}", token, why));
  }

  std::shared_ptr<Shared> shared_;
  int32_t state_;
  bool ended_ = false;
};

// [THINK] any bytes [/THINK], or nothing.
uint32_t add_optional_think(GrammarBuilder& b) {
  SymbolSet any;
  for (int c = 0; c < 256; ++c) any.set(c);
  const uint32_t body = b.declare("think_body");
  b.define(body, {{symbols(any), ref(body)}, {special(kEndThink)}});
  return b.rule("think", {{}, {special(kThink), ref(body)}});
}

void require_special(const Vocabulary& vocab, int symbol, std::string_view name, std::string_view what) {
  if (vocab.special_id(symbol) < 0) {
    throw InvalidRequest(fmt::format("{}: the tokenizer has no {} token", what, name));
  }
}

}  // namespace

std::shared_ptr<const engine::TokenConstraint> grammar_constraint(std::shared_ptr<const Vocabulary> vocab,
                                                                  Grammar grammar) {
  CHECK(vocab != nullptr);
  return std::make_shared<GrammarConstraint>(std::make_shared<Shared>(std::move(vocab), std::move(grammar)));
}

std::shared_ptr<const engine::TokenConstraint> json_constraint(std::shared_ptr<const Vocabulary> vocab,
                                                               const tokenizer::JsonValue* schema,
                                                               ConstraintOptions options) {
  GrammarBuilder b;
  const uint32_t value = schema != nullptr ? add_json_schema(b, *schema, "response_format.json_schema.schema")
                                           : add_any_json_object(b);
  Seq root = {ref(value)};
  if (options.allow_think) {
    require_special(*vocab, kThink, "[THINK]", "reasoning");
    require_special(*vocab, kEndThink, "[/THINK]", "reasoning");
    root = Seq{ref(add_optional_think(b))} + root;
  }
  // The root's name is what an error about the whole schema names (e.g. one with no finite value).
  const uint32_t root_rule = b.rule(schema != nullptr ? "response_format.json_schema.schema" : "response_format", {root});
  return grammar_constraint(std::move(vocab), std::move(b).finish(root_rule));
}

std::shared_ptr<const engine::TokenConstraint> tool_call_constraint(std::shared_ptr<const Vocabulary> vocab,
                                                                    const std::vector<ToolSpec>& tools,
                                                                    const std::optional<std::string>& forced_name,
                                                                    bool parallel_tool_calls,
                                                                    ConstraintOptions options) {
  require_special(*vocab, kToolCalls, "[TOOL_CALLS]", "tool calls");
  require_special(*vocab, kArgs, "[ARGS]", "tool calls");
  if (tools.empty()) throw InvalidRequest("tools: a forced tool call needs at least one tool");
  GrammarBuilder b;
  std::vector<Seq> calls;  // name [ARGS] arguments, one alternative per tool
  std::string one_path;    // the parameters' path of the last tool taken
  for (size_t i = 0; i < tools.size(); ++i) {
    const ToolSpec& tool = tools[i];
    if (forced_name && tool.name != *forced_name) continue;
    if (tool.name.empty()) throw InvalidRequest(fmt::format("tools[{}].function.name: empty", i));
    const std::string path = fmt::format("tools[{}].function.parameters", i);
    one_path = path;
    const uint32_t args = tool.parameters.is_null() ? add_any_json_object(b) : add_json_schema(b, tool.parameters, path);
    calls.push_back(literal(tool.name) + special(kArgs) + ref(args));
  }
  if (calls.empty()) {
    throw InvalidRequest(fmt::format("tool_choice: function \"{}\" is not among the tools", *forced_name));
  }
  const std::string root_name = calls.size() == 1 ? one_path : "tools";
  const uint32_t call = b.rule("tool_call", {Seq{special(kToolCalls), ref(b.rule("call_body", std::move(calls)))}});
  uint32_t all = call;
  if (parallel_tool_calls) {
    all = b.declare("tool_calls");
    b.define(all, {{ref(call)}, {ref(call), ref(all)}});
  }
  Seq root = {ref(all)};
  if (options.allow_think) {
    require_special(*vocab, kThink, "[THINK]", "reasoning");
    require_special(*vocab, kEndThink, "[/THINK]", "reasoning");
    root = Seq{ref(add_optional_think(b))} + root;
  }
  // Named after the tool when there is one to call, else "tools" (root_name): what an error about the whole
  // grammar (no finite call) names.
  const uint32_t root_rule = b.rule(root_name, {root});
  return grammar_constraint(std::move(vocab), std::move(b).finish(root_rule));
}

}  // namespace quatre::grammar
