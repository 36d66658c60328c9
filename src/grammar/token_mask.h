// The token mask of one automaton state: which ids may come next. A non-special id is allowed when its whole
// byte string is a valid continuation (walk of the vocabulary trie with the automaton, pruned at dead states;
// a subtree is taken whole when its bytes all loop on the state, or when it holds only plain string content and
// the state accepts that many plain characters: Automaton::plain_run); a special id when the grammar admits its symbol
// here; EOS when the text so far is complete.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "grammar/automaton.h"
#include "grammar/vocabulary.h"

namespace quatre::grammar {

// Bit id of the result is set when id is allowed ([ceil(V/64)] words).
std::vector<uint64_t> compute_token_mask(Automaton& automaton, const Vocabulary& vocab, int32_t state);

// logits[id] = -inf where bit id is clear (and for ids beyond the mask).
void apply_token_mask(std::span<const uint64_t> mask, std::span<float> logits);

}  // namespace quatre::grammar
