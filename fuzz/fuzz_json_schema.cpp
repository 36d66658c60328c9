// libFuzzer target: a JSON Schema (response_format.json_schema.schema / a tool's parameters) through the schema
// compiler into a token constraint over a small synthetic vocabulary, then a walk of up to 64 tokens (the first
// allowed token each time). InvalidRequest is the expected refusal (at compile time only). What must hold: a
// compiled schema's mask always leaves a token (the engine would end the request with an error otherwise), the
// token taken is accepted, and after EOS nothing more is needed.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "core/check.h"
#include "core/error.h"
#include "grammar/constraint.h"
#include "grammar/vocabulary.h"
#include "synth/synthetic_tekken.h"
#include "tokenizer/json_value.h"
#include "tokenizer/tekken.h"

namespace {

using namespace quatre;

const std::shared_ptr<const grammar::Vocabulary>& fuzz_vocab() {
  static const tokenizer::Tekken tekken = tokenizer::Tekken::from_json(synth::synthetic_tekken_json(1300), "synthetic fuzz tekken");
  static const auto vocab = std::make_shared<const grammar::Vocabulary>(tekken);
  return vocab;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& vocab = fuzz_vocab();
  tokenizer::JsonValue schema;
  try {
    schema = tokenizer::parse_json(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz schema");
  } catch (const InvalidRequest&) {
    return 0;  // not JSON: the request parser's business
  }
  std::unique_ptr<engine::TokenConstraint> c;
  try {
    c = grammar::json_constraint(vocab, &schema)->clone();
  } catch (const InvalidRequest&) {
    return 0;
  }
  const int32_t eos = vocab->specials().eos;  // -1: none
  std::vector<float> logits(static_cast<size_t>(vocab->size()));
  for (int step = 0; step < 64 && !c->is_complete(); ++step) {
    std::fill(logits.begin(), logits.end(), 0.0f);
    c->mask(logits);
    // A token other than EOS when there is one, so the walk goes deeper into the schema.
    int32_t pick = -1;
    for (int32_t id = 0; id < vocab->size(); ++id) {
      if (std::isinf(logits[static_cast<size_t>(id)])) continue;
      pick = id;
      if (id != eos) break;
    }
    CHECK(pick >= 0) << "the mask left no token after " << step << " tokens";
    c->accept(pick);
    if (pick == eos) break;
  }
  return 0;
}
