// Constrained decoding for the server (issue #8 item 4): response_format json_object / json_schema and forced
// tool calls, as engine::TokenConstraint implementations over the Tekken vocabulary.
//
//   auto vocab = std::make_shared<const grammar::Vocabulary>(tekken);            // once per tokenizer
//   auto proto = grammar::json_constraint(vocab, &schema, {.allow_think = true}); // per request (compiles)
//   std::unique_ptr<engine::TokenConstraint> c = proto->clone();                 // one per choice
//
// The text allowed: optionally (allow_think) "[THINK] any tokens [/THINK]" first; then
//   json_constraint: one JSON value valid for the schema (json_schema.h: supported subset and formatting), or
//     any JSON object when schema is nullptr (json_object);
//   tool_call_constraint: "[TOOL_CALLS]name[ARGS]{arguments valid for that tool's parameters}", once, or one or
//     more times when parallel_tool_calls; name is forced_name when given, else any of the tools;
// then "</s>". Special tokens are allowed only where this structure needs them; EOS only once the text is
// complete. mask() costs a trie walk the first time a grammar state is met and a cached bitmask afterwards.
// Clones share the compiled automaton and the mask cache (guarded by a mutex), never the matching state.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/token_constraint.h"
#include "grammar/vocabulary.h"
#include "tokenizer/json_value.h"

namespace quatre::grammar {

struct ConstraintOptions {
  bool allow_think = false;  // reasoning on: a free [THINK]...[/THINK] block may come first
};

struct ToolSpec {
  std::string name;
  tokenizer::JsonValue parameters;  // a JSON schema; null = any JSON object
};

// Throws InvalidRequest (naming the keyword and its path) for a schema outside the supported subset.
std::shared_ptr<const engine::TokenConstraint> json_constraint(std::shared_ptr<const Vocabulary> vocab,
                                                               const tokenizer::JsonValue* schema,
                                                               ConstraintOptions options = {});

// Throws InvalidRequest for an empty tool list, a forced name that is not among the tools, a bad parameters
// schema, or a vocabulary without [TOOL_CALLS]/[ARGS].
std::shared_ptr<const engine::TokenConstraint> tool_call_constraint(std::shared_ptr<const Vocabulary> vocab,
                                                                    const std::vector<ToolSpec>& tools,
                                                                    const std::optional<std::string>& forced_name,
                                                                    bool parallel_tool_calls,
                                                                    ConstraintOptions options = {});

// The constraint of any grammar (tests, and callers with their own grammar).
std::shared_ptr<const engine::TokenConstraint> grammar_constraint(std::shared_ptr<const Vocabulary> vocab,
                                                                  Grammar grammar);

}  // namespace quatre::grammar
