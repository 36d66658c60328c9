// Helpers of the chat rendering and output parsing tests: a synthetic byte-level Tekken (PROTOCOL §1.1
// "minimal synthetic file", no merges) whose ids can be derived by hand from a text form.
// Test-only; depends on quatre_tokenizer.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/tekken.h"

namespace quatre::tokenizer::chat_testing {

inline constexpr int kSyntheticSpecials = 100;

// PROTOCOL §1.3 names and ids; other slots are <SPECIAL_n>.
const std::vector<std::pair<int, std::string>>& special_names();

// 256 single-byte ranks only, 100 special ids named as in §1.3, image {14, 1540, 2} and the Small 4
// model_settings_builder: text encodes to one id per byte, id = 100 + byte.
const Tekken& synthetic_tekken();

// The ids the synthetic vocabulary gives a text form written like the PROTOCOL examples: each special name is
// its §1.3 id, every other byte is 100 + byte. An independent reading of an expected string.
std::vector<TokenId> synthetic_ids(std::string_view text_form);

}  // namespace quatre::tokenizer::chat_testing
