// GrammarBuilder: rules as lists of alternatives, flattened for the automaton after two checks (productive rules,
// no left recursion).
#include "grammar/grammar.h"

#include <fmt/format.h>

#include <functional>
#include <map>

#include "core/check.h"
#include "core/error.h"

namespace quatre::grammar {

Item symbols(const SymbolSet& set) { return Item{.is_rule = false, .rule = 0, .set = set}; }

Item byte_range(uint8_t lo, uint8_t hi) {
  SymbolSet s;
  for (int b = lo; b <= hi; ++b) s.set(b);
  return symbols(s);
}

Item special(SpecialSymbol sym) {
  SymbolSet s;
  s.set(sym);
  return symbols(s);
}

Item ref(uint32_t rule) { return Item{.is_rule = true, .rule = rule, .set = {}}; }

Seq literal(std::string_view bytes) {
  Seq seq;
  for (char c : bytes) seq.push_back(byte_range(static_cast<uint8_t>(c), static_cast<uint8_t>(c)));
  return seq;
}

Seq operator+(Seq a, const Seq& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

Seq operator+(Seq a, const Item& b) {
  a.push_back(b);
  return a;
}

uint32_t GrammarBuilder::declare(std::string name) {
  names_.push_back(std::move(name));
  defs_.emplace_back();
  return static_cast<uint32_t>(defs_.size() - 1);
}

void GrammarBuilder::define(uint32_t rule, std::vector<Seq> alternatives) {
  CHECK(rule < defs_.size() && !defs_[rule].has_value()) << "rule " << rule << " defined twice";
  defs_[rule] = std::move(alternatives);
}

uint32_t GrammarBuilder::rule(std::string name, std::vector<Seq> alternatives) {
  const uint32_t r = declare(std::move(name));
  define(r, std::move(alternatives));
  return r;
}

namespace {

// productive[r]: r derives some finite text (least fixed point).
std::vector<bool> productive_rules(const std::vector<std::vector<Seq>>& defs) {
  std::vector<bool> productive(defs.size(), false);
  for (bool changed = true, forward = true; changed; forward = !forward) {  // alternating sweeps: chains of
    changed = false;                                                     // rules converge in one or two
    for (size_t i = 0; i < defs.size(); ++i) {
      const size_t r = forward ? i : defs.size() - 1 - i;
      if (productive[r]) continue;
      for (const Seq& alt : defs[r]) {
        bool ok = true;
        for (const Item& it : alt) ok = ok && (!it.is_rule || productive[it.rule]);
        if (ok) {
          productive[r] = changed = true;
          break;
        }
      }
    }
  }
  return productive;
}

std::vector<bool> nullable_rules(const std::vector<std::vector<Seq>>& defs) {
  std::vector<bool> nullable(defs.size(), false);
  for (bool changed = true, forward = true; changed; forward = !forward) {
    changed = false;
    for (size_t i = 0; i < defs.size(); ++i) {
      const size_t r = forward ? i : defs.size() - 1 - i;
      if (nullable[r]) continue;
      for (const Seq& alt : defs[r]) {
        bool ok = true;
        for (const Item& it : alt) ok = ok && it.is_rule && nullable[it.rule];
        if (ok) {
          nullable[r] = changed = true;
          break;
        }
      }
    }
  }
  return nullable;
}

// Throws when some rule reaches itself through leading nullable elements only (the matcher would not terminate).
void check_left_recursion(const std::vector<std::vector<Seq>>& defs, const std::vector<std::string>& names) {
  const std::vector<bool> nullable = nullable_rules(defs);
  std::vector<std::vector<uint32_t>> left(defs.size());
  for (size_t r = 0; r < defs.size(); ++r) {
    for (const Seq& alt : defs[r]) {
      for (const Item& it : alt) {
        if (!it.is_rule) break;
        left[r].push_back(it.rule);
        if (!nullable[it.rule]) break;
      }
    }
  }
  std::vector<int> color(defs.size(), 0);  // 0 new, 1 on the DFS path, 2 done
  std::function<void(uint32_t)> visit = [&](uint32_t r) {
    color[r] = 1;
    for (uint32_t s : left[r]) {
      if (color[s] == 1) {
        throw InvalidRequest(fmt::format(
            "{}: a reference cycle that consumes no input (e.g. a $ref to itself); the schema has no finite "
            "JSON value there", names[s]));
      }
      if (color[s] == 0) visit(s);
    }
    color[r] = 2;
  };
  for (uint32_t r = 0; r < defs.size(); ++r) {
    if (color[r] == 0) visit(r);
  }
}

}  // namespace

Grammar GrammarBuilder::finish(uint32_t root) && {
  std::vector<std::vector<Seq>> defs(defs_.size());
  for (size_t r = 0; r < defs_.size(); ++r) {
    CHECK(defs_[r].has_value()) << "grammar rule " << names_[r] << " declared but never defined";
    defs[r] = std::move(*defs_[r]);
  }
  const std::vector<bool> productive = productive_rules(defs);
  if (!productive[root]) {
    throw InvalidRequest(fmt::format("{}: the schema admits no finite JSON value (required recursion)", names_[root]));
  }
  for (auto& alts : defs) {  // alternatives that can never finish would let the model wander forever
    std::erase_if(alts, [&](const Seq& alt) {
      for (const Item& it : alt) {
        if (it.is_rule && !productive[it.rule]) return true;
      }
      return false;
    });
  }
  check_left_recursion(defs, names_);

  Grammar g;
  g.root = root;
  g.rule_names = names_;
  g.alternatives.resize(defs.size());
  std::map<std::string, uint32_t> set_index;
  for (size_t r = 0; r < defs.size(); ++r) {
    for (const Seq& alt : defs[r]) {
      g.alternatives[r].push_back(static_cast<uint32_t>(g.elements.size()));
      for (const Item& it : alt) {
        if (it.is_rule) {
          g.elements.push_back({Element::Kind::kRule, it.rule});
          continue;
        }
        auto [pos, inserted] = set_index.try_emplace(it.set.to_string(), static_cast<uint32_t>(g.sets.size()));
        if (inserted) g.sets.push_back(it.set);
        g.elements.push_back({Element::Kind::kSymbols, pos->second});
      }
      g.elements.push_back({Element::Kind::kEnd, 0});
    }
  }
  return g;
}

}  // namespace quatre::grammar
