// Constrained decoding cost per token over the real 131,072-id Tekken vocabulary (issue #8 item 4: target
// < 50 us per token mask at batch 1): mask() alone, timed manually, along the tokens of realistic documents for a
// realistic schema, with warm caches (states seen before: the steady state of a long generation and of n > 1)
// and cold (a fresh constraint per document: every state's first mask is a trie walk); plus schema compilation
// and the tool-call constraint. Not part of CTest.
//   bench_grammar [--check] [--data-dir DIR] [benchmark flags]
// Times are this thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so that a loaded machine does not inflate them.
// --check first verifies that every token of the documents is allowed by the mask, and stops on failure.
#include <benchmark/benchmark.h>

#include <fmt/format.h>

#include <ctime>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <vector>

#include "grammar/constraint.h"
#include "tokenizer/tekken.h"

namespace {

double thread_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

using quatre::engine::TokenConstraint;
using quatre::grammar::Vocabulary;
using quatre::tokenizer::JsonValue;
using quatre::tokenizer::Tekken;

const char* kSchema = R"({
  "type": "object",
  "properties": {
    "id": {"type": "integer"},
    "name": {"type": "string"},
    "email": {"type": ["string", "null"], "format": "email"},
    "active": {"type": "boolean"},
    "score": {"type": "number"},
    "role": {"enum": ["admin", "editor", "viewer"]},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 32}, "maxItems": 8},
    "address": {"$ref": "#/$defs/address"},
    "orders": {"type": "array", "items": {"$ref": "#/$defs/order"}}
  },
  "required": ["id", "name", "email", "active", "role", "tags", "orders"],
  "additionalProperties": false,
  "$defs": {
    "address": {"type": "object", "properties": {"street": {"type": "string"}, "city": {"type": "string"},
                "country": {"type": "string", "minLength": 2, "maxLength": 2}}, "required": ["street", "city"]},
    "order": {"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"},
              "price": {"type": "number"}, "note": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
              "required": ["sku", "qty", "price", "note"], "additionalProperties": false}
  }
})";

const char* kDocuments[] = {
    R"({"id": 1042, "name": "Ada Lovelace", "email": "ada@example.org", "active": true, "score": 98.25, "role": "admin", "tags": ["mathematics", "poetry", "engines"], "address": {"street": "12 St James's Square", "city": "London", "country": "GB"}, "orders": [{"sku": "AE-001", "qty": 2, "price": 19.99, "note": null}, {"sku": "BX-77", "qty": 1, "price": 250.0, "note": "gift wrap, please"}]})",
    R"({"id":7,"name":"Zoë Müller-Lüdenscheidt","email":null,"active":false,"role":"viewer","tags":[],"orders":[{"sku":"Q-9","qty":12,"price":1.5e2,"note":"Lieferung bis Freitag — danke!"}]})",
    R"({"id": 31337, "name": "李小龙", "email": "bruce@example.com", "active": true, "score": -0.5, "role": "editor", "tags": ["功夫", "film"], "orders": []})",
};

struct Inputs {
  std::optional<Tekken> tekken;
  std::shared_ptr<const Vocabulary> vocab;
  JsonValue schema;
  std::vector<std::vector<int32_t>> docs;  // token ids of each document
};

Inputs& inputs() {
  static Inputs in;
  return in;
}

void load_inputs(const std::filesystem::path& dir) {
  Inputs& in = inputs();
  in.tekken.emplace(Tekken::load(dir / "tekken.json"));
  in.vocab = std::make_shared<const Vocabulary>(*in.tekken);
  in.schema = quatre::tokenizer::parse_json(kSchema);
  for (const char* doc : kDocuments) in.docs.push_back(in.tekken->encode(doc));
}

bool check(const Inputs& in) {
  const auto proto = quatre::grammar::json_constraint(in.vocab, &in.schema);
  std::vector<float> logits(in.vocab->size());
  for (size_t d = 0; d < in.docs.size(); ++d) {
    auto c = proto->clone();
    for (size_t i = 0; i < in.docs[d].size(); ++i) {
      std::fill(logits.begin(), logits.end(), 0.0f);
      c->mask(logits);
      if (std::isinf(logits[in.docs[d][i]])) {
        fmt::print(stderr, "check: document {} token {} (id {}) is masked\n", d, i, in.docs[d][i]);
        return false;
      }
      c->accept(in.docs[d][i]);
    }
    if (!c->is_complete()) {
      fmt::print(stderr, "check: document {} is not complete after its tokens\n", d);
      return false;
    }
  }
  fmt::print("check: ok\n");
  return true;
}

// One iteration = mask() at the next token position of the documents (manual time: mask only).
void run_masks(benchmark::State& state, bool cold) {
  const Inputs& in = inputs();
  std::shared_ptr<const TokenConstraint> proto = quatre::grammar::json_constraint(in.vocab, &in.schema);
  std::vector<float> logits(in.vocab->size(), 0.0f);
  std::unique_ptr<TokenConstraint> c;
  size_t doc = 0, pos = 0;
  if (!cold) {  // one pass first: every state's mask is cached
    for (const auto& ids : in.docs) {
      c = proto->clone();
      for (int32_t id : ids) {
        c->mask(logits);
        c->accept(id);
      }
    }
  }
  c = proto->clone();
  for (auto _ : state) {
    if (pos == in.docs[doc].size()) {
      pos = 0;
      doc = (doc + 1) % in.docs.size();
      if (cold) proto = quatre::grammar::json_constraint(in.vocab, &in.schema);
      c = proto->clone();
    }
    std::fill(logits.begin(), logits.end(), 0.0f);
    const double t0 = thread_seconds();
    c->mask(logits);
    const double t1 = thread_seconds();
    benchmark::DoNotOptimize(logits.data());
    state.SetIterationTime(t1 - t0);
    c->accept(in.docs[doc][pos++]);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_MaskWarm(benchmark::State& state) { run_masks(state, false); }
void BM_MaskCold(benchmark::State& state) { run_masks(state, true); }
BENCHMARK(BM_MaskWarm)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MaskCold)->UseManualTime()->Unit(benchmark::kMicrosecond);

// accept() of one token (the other per-token cost).
void BM_Accept(benchmark::State& state) {
  const Inputs& in = inputs();
  const auto proto = quatre::grammar::json_constraint(in.vocab, &in.schema);
  auto c = proto->clone();
  size_t doc = 0, pos = 0;
  for (auto _ : state) {
    if (pos == in.docs[doc].size()) {
      pos = 0;
      doc = (doc + 1) % in.docs.size();
      c = proto->clone();
    }
    c->accept(in.docs[doc][pos++]);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Accept)->Unit(benchmark::kMicrosecond);

void BM_CompileSchema(benchmark::State& state) {
  const Inputs& in = inputs();
  for (auto _ : state) benchmark::DoNotOptimize(quatre::grammar::json_constraint(in.vocab, &in.schema));
}
BENCHMARK(BM_CompileSchema)->Unit(benchmark::kMicrosecond);

// The first mask of a forced tool call (only [TOOL_CALLS] allowed), then the masks along its name and arguments.
void BM_ToolCallWarm(benchmark::State& state) {
  const Inputs& in = inputs();
  const Tekken& t = *in.tekken;
  const std::vector<quatre::grammar::ToolSpec> tools = {{"update_customer", in.schema}};
  const auto proto = quatre::grammar::tool_call_constraint(in.vocab, tools, "update_customer", false);
  std::vector<int32_t> ids = {*t.special_id("[TOOL_CALLS]")};
  t.encode_into("update_customer", ids);
  ids.push_back(*t.special_id("[ARGS]"));
  t.encode_into(kDocuments[0], ids);
  std::vector<float> logits(in.vocab->size(), 0.0f);
  auto c = proto->clone();
  for (int32_t id : ids) {  // warm
    c->mask(logits);
    c->accept(id);
  }
  c = proto->clone();
  size_t pos = 0;
  for (auto _ : state) {
    if (pos == ids.size()) {
      pos = 0;
      c = proto->clone();
    }
    std::fill(logits.begin(), logits.end(), 0.0f);
    const double t0 = thread_seconds();
    c->mask(logits);
    const double t1 = thread_seconds();
    state.SetIterationTime(t1 - t0);
    c->accept(ids[pos++]);
  }
}
BENCHMARK(BM_ToolCallWarm)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  bool is_check = false;
  std::filesystem::path data_dir = std::filesystem::path(QUATRE_BINARY_DIR) / "tests" / "tokenizer" / "data";
  std::vector<char*> rest = {argv[0]};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--check") == 0) {
      is_check = true;
    } else if (std::strcmp(argv[i], "--data-dir") == 0 && i + 1 < argc) {
      data_dir = argv[++i];
    } else {
      rest.push_back(argv[i]);
    }
  }
  try {
    load_inputs(data_dir);
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_grammar: {}\n", e.what());
    return 1;
  }
  fmt::print("vocabulary: {} ids; documents: {} tokens\n", inputs().vocab->size(),
             inputs().docs[0].size() + inputs().docs[1].size() + inputs().docs[2].size());
  if (is_check && !check(inputs())) return 1;
  int n_args = static_cast<int>(rest.size());
  benchmark::Initialize(&n_args, rest.data());
  if (benchmark::ReportUnrecognizedArguments(n_args, rest.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
