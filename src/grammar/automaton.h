// The pushdown automaton of a Grammar, determinized lazily: a state is the set of live parse stacks (each stack a
// chain of positions in the grammar, hash-consed so equal stacks share one node id), interned so that equal sets
// get one state id, with a memo of its transitions. Stacks are expanded until their top is a symbol set, so a
// step by one symbol is: keep the stacks whose top admits it, advance them, expand again. Deterministic and
// memoized: matching a document costs hash lookups once its states have been seen. Not thread-safe.
#pragma once

#include <bitset>
#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

#include "grammar/grammar.h"

namespace quatre::grammar {

class Automaton {
 public:
  static constexpr int32_t kDead = -1;

  explicit Automaton(Grammar grammar);

  int32_t start() const { return start_; }
  // The state after `symbol`, or kDead when no stack admits it.
  int32_t step(int32_t state, int symbol);
  // The state after a byte string (kDead as soon as one byte is refused).
  int32_t step_bytes(int32_t state, std::string_view bytes);
  // Some stack is empty: the text so far is a complete sentence of the grammar.
  bool accepting(int32_t state) const { return states_[state].accepting; }
  // Symbols that some stack admits next.
  const SymbolSet& next_symbols(int32_t state) const { return states_[state].next; }
  // Bytes b with step(state, b) == state (e.g. plain characters inside a JSON string).
  const std::bitset<256>& self_loop_bytes(int32_t state);
  // Inside a string: the state that every plain character (utf8_dfa.h) leads to from `state`, all its bytes
  // being accepted on the way; kDead when some plain byte is refused or two characters lead to different states.
  // Checked on the automaton itself, once per state.
  int32_t char_next(int32_t state);
  // How many plain characters in a row are accepted from `state` (at most `limit`; `limit` when char_next loops).
  int plain_run(int32_t state, int limit);
  size_t n_states() const { return states_.size(); }
  const Grammar& grammar() const { return g_; }

 private:
  static constexpr int32_t kEmptyStack = -1;  // node id of the empty stack
  struct Node {
    uint32_t pos;    // element index (a kSymbols or kRule element, never kEnd)
    int32_t parent;  // node below, or kEmptyStack
  };
  struct State {
    std::vector<int32_t> tops;  // sorted node ids whose top is a kSymbols element, plus kEmptyStack if accepting
    bool accepting = false;
    SymbolSet next;
    std::vector<int32_t> trans;  // [kNumSymbols]: -2 unknown, kDead, or a state id
    std::optional<std::bitset<256>> loops;
    std::optional<int32_t> char_next;
  };
  struct VecHash {
    size_t operator()(const std::vector<int32_t>& v) const;
  };

  int32_t node(uint32_t pos, int32_t parent);
  int32_t push(uint32_t pos, int32_t parent);  // node at pos, or `parent` itself when pos is a kEnd
  void expand(int32_t node_id, std::vector<int32_t>& out, std::vector<int32_t>& seen);
  int32_t intern(std::vector<int32_t> tops);

  Grammar g_;
  std::vector<Node> nodes_;
  std::unordered_map<uint64_t, int32_t> node_ids_;
  std::vector<State> states_;
  std::unordered_map<std::vector<int32_t>, int32_t, VecHash> state_ids_;
  int32_t start_ = 0;
};

}  // namespace quatre::grammar
