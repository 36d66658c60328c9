// A synthetic tekken.json in the Small 4 layout (PROTOCOL.md §1.1, §1.3): the v15 special-token table,
// the 256 single bytes, then merges of common English pieces and deterministic filler up to the model's
// vocabulary. For synthetic checkpoints only: the real vocabulary ships with the real checkpoint.
// Depends on io.
#pragma once

#include <cstdint>
#include <string>

namespace quatre::synth {

constexpr int kNumSpecialTokens = 1000;

// The name of special id `id` in the Small 4 table ("<s>", "[INST]", ..., "<SPECIAL_38>").
std::string special_token_name(int id);

// The tekken.json text for a vocabulary of `vocab_size` ids (specials included; > 1256).
std::string synthetic_tekken_json(int64_t vocab_size);

}  // namespace quatre::synth
