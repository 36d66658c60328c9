// Automaton: hash-consed parse stacks, interned stack sets, memoized transitions.
#include "grammar/automaton.h"

#include <algorithm>

#include "core/check.h"
#include "grammar/utf8_dfa.h"

namespace quatre::grammar {

size_t Automaton::VecHash::operator()(const std::vector<int32_t>& v) const {
  uint64_t h = 1469598103934665603ull;
  for (int32_t x : v) h = (h ^ static_cast<uint32_t>(x)) * 1099511628211ull;
  return static_cast<size_t>(h);
}

Automaton::Automaton(Grammar grammar) : g_(std::move(grammar)) {
  std::vector<int32_t> tops, seen;
  for (uint32_t alt : g_.alternatives[g_.root]) expand(push(alt, kEmptyStack), tops, seen);
  start_ = intern(std::move(tops));
}

int32_t Automaton::node(uint32_t pos, int32_t parent) {
  const uint64_t key = (static_cast<uint64_t>(pos) << 32) | static_cast<uint32_t>(parent + 1);
  auto [it, inserted] = node_ids_.try_emplace(key, static_cast<int32_t>(nodes_.size()));
  if (inserted) nodes_.push_back({pos, parent});
  return it->second;
}

int32_t Automaton::push(uint32_t pos, int32_t parent) {
  return g_.elements[pos].kind == Element::Kind::kEnd ? parent : node(pos, parent);
}

// Adds to `out` every stack reachable from `node_id` by entering rules, so that each has a symbol set on top
// (or is empty). `seen` avoids expanding one stack twice within a step.
void Automaton::expand(int32_t node_id, std::vector<int32_t>& out, std::vector<int32_t>& seen) {
  if (std::find(seen.begin(), seen.end(), node_id) != seen.end()) return;
  seen.push_back(node_id);
  if (node_id == kEmptyStack) {
    out.push_back(kEmptyStack);
    return;
  }
  const Node n = nodes_[node_id];
  const Element& e = g_.elements[n.pos];
  if (e.kind == Element::Kind::kSymbols) {
    out.push_back(node_id);
    return;
  }
  const int32_t cont = push(n.pos + 1, n.parent);  // where the rule returns to
  for (uint32_t alt : g_.alternatives[e.arg]) expand(push(alt, cont), out, seen);
}

int32_t Automaton::intern(std::vector<int32_t> tops) {
  std::sort(tops.begin(), tops.end());
  tops.erase(std::unique(tops.begin(), tops.end()), tops.end());
  auto it = state_ids_.find(tops);
  if (it != state_ids_.end()) return it->second;
  State s;
  for (int32_t t : tops) {
    if (t == kEmptyStack) {
      s.accepting = true;
    } else {
      s.next |= g_.sets[g_.elements[nodes_[t].pos].arg];
    }
  }
  s.tops = tops;
  s.trans.assign(kNumSymbols, -2);
  const auto id = static_cast<int32_t>(states_.size());
  states_.push_back(std::move(s));
  state_ids_.emplace(std::move(tops), id);
  return id;
}

int32_t Automaton::step(int32_t state, int symbol) {
  DCHECK(symbol >= 0 && symbol < kNumSymbols);
  int32_t cached = states_[state].trans[symbol];
  if (cached != -2) return cached;
  int32_t result = kDead;
  if (states_[state].next.test(symbol)) {
    std::vector<int32_t> out, seen;
    const std::vector<int32_t> tops = states_[state].tops;  // copy: intern() may grow states_
    for (int32_t t : tops) {
      if (t == kEmptyStack) continue;
      const Node n = nodes_[t];
      if (g_.sets[g_.elements[n.pos].arg].test(symbol)) expand(push(n.pos + 1, n.parent), out, seen);
    }
    result = intern(std::move(out));
  }
  states_[state].trans[symbol] = result;
  return result;
}

int32_t Automaton::step_bytes(int32_t state, std::string_view bytes) {
  for (char c : bytes) {
    state = step(state, static_cast<uint8_t>(c));
    if (state == kDead) return kDead;
  }
  return state;
}

const std::bitset<256>& Automaton::self_loop_bytes(int32_t state) {
  if (!states_[state].loops) {
    std::bitset<256> loops;
    const SymbolSet next = states_[state].next;
    for (int b = 0; b < 256; ++b) {
      if (next.test(b) && step(state, b) == state) loops.set(b);
    }
    states_[state].loops = loops;
  }
  return *states_[state].loops;
}

// Runs the UTF-8 automaton alongside, over pairs (UTF-8 state, automaton state) from (0, state): every plain byte
// must keep the automaton alive, and every completed character must reach one same state.
int32_t Automaton::char_next(int32_t state) {
  if (states_[state].char_next) return *states_[state].char_next;
  std::vector<std::pair<int, int32_t>> todo = {{0, state}}, seen;
  int32_t target = -2;  // not met yet
  bool uniform = true;
  while (uniform && !todo.empty()) {
    const auto [u, from] = todo.back();
    todo.pop_back();
    for (int b = 0; b < 256 && uniform; ++b) {
      const int next = utf8_plain_next(u, static_cast<uint8_t>(b));
      if (next < 0) continue;
      const int32_t s = step(from, b);
      if (s == kDead) {
        uniform = false;
      } else if (next == 0) {
        uniform = target == -2 || target == s;
        target = s;
      } else if (std::find(seen.begin(), seen.end(), std::pair{next, s}) == seen.end()) {
        seen.emplace_back(next, s);
        todo.emplace_back(next, s);
      }
    }
    uniform = uniform && seen.size() < 64;  // a string state has a handful; more means something else
  }
  const int32_t result = uniform && target >= 0 ? target : kDead;
  states_[state].char_next = result;
  return result;
}

int Automaton::plain_run(int32_t state, int limit) {
  int n = 0;
  for (int32_t s = state; n < limit; ++n) {
    const int32_t next = char_next(s);
    if (next == kDead) return n;
    if (next == s) return limit;
    s = next;
  }
  return n;
}

}  // namespace quatre::grammar
