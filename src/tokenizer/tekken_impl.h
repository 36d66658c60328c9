// The state behind Tekken (tekken.h), shared by its .cpp files (load, encode, decode).
// Internal to src/tokenizer; depends on core and the tokenizer's internal headers.
#pragma once

#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizer/pretokenize.h"
#include "tokenizer/rank_map.h"
#include "tokenizer/tekken.h"

namespace quatre::tokenizer {

struct Tekken::Impl {
  std::string origin;   // file name (or caller's label) for messages
  std::string version;  // "v15"
  int32_t vocab_size = 0;
  int32_t n_special = 0;
  RankMap ranks;                                 // BPE entries: rank r is id r + n_special
  std::vector<std::string> special_names;        // [n_special]
  std::vector<bool> special_is_control;          // [n_special]
  std::unordered_map<std::string, TokenId> special_by_name;
  PreTokenizer pretokenizer;
  std::optional<ImageConfig> image;
  std::vector<ModelSettingSpec> model_settings;
  TokenId bos = 0;
  TokenId eos = 0;
};

}  // namespace quatre::tokenizer
