// A context-free grammar over symbols (the 256 byte values plus the few special tokens a structured output may
// contain), the form into which JSON schemas and tool-call formats are compiled (json_schema.h) and which the
// automaton (automaton.h) matches. Depends on core only.
#pragma once

#include <bitset>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace quatre::grammar {

// Symbols 0..255 are bytes; the special tokens that structured outputs use follow.
enum SpecialSymbol : int { kToolCalls = 256, kArgs = 257, kThink = 258, kEndThink = 259 };
inline constexpr int kNumSymbols = 260;
using SymbolSet = std::bitset<kNumSymbols>;

struct Element {
  enum class Kind : uint8_t { kSymbols, kRule, kEnd };
  Kind kind = Kind::kEnd;
  uint32_t arg = 0;  // kSymbols: index into Grammar::sets; kRule: rule id
};

// Flat storage: an alternative is elements[start], elements[start + 1], ... up to a kEnd element.
struct Grammar {
  std::vector<SymbolSet> sets;
  std::vector<Element> elements;
  std::vector<std::vector<uint32_t>> alternatives;  // rule -> start index of each alternative
  std::vector<std::string> rule_names;              // for error messages and debugging
  uint32_t root = 0;
};

// One element of an alternative under construction: a set of symbols or a reference to a rule.
struct Item {
  bool is_rule = false;
  uint32_t rule = 0;
  SymbolSet set;
};
using Seq = std::vector<Item>;

Item symbols(const SymbolSet& set);
Item byte_range(uint8_t lo, uint8_t hi);
Item special(SpecialSymbol s);
Item ref(uint32_t rule);
Seq literal(std::string_view bytes);  // one item per byte
Seq operator+(Seq a, const Seq& b);
Seq operator+(Seq a, const Item& b);

class GrammarBuilder {
 public:
  uint32_t declare(std::string name);  // a rule to define later (recursion)
  void define(uint32_t rule, std::vector<Seq> alternatives);
  uint32_t rule(std::string name, std::vector<Seq> alternatives);
  size_t n_rules() const { return defs_.size(); }
  // Flattens the rules. Throws InvalidRequest when a rule can reach itself without consuming input (a $ref
  // cycle) or when `root` derives no finite text; drops alternatives that can never finish.
  Grammar finish(uint32_t root) &&;

 private:
  std::vector<std::string> names_;
  std::vector<std::optional<std::vector<Seq>>> defs_;
};

}  // namespace quatre::grammar
