// The Tekken tokenizer of Mistral Small 4 (PROTOCOL.md §1): loads tekken.json, encodes text with the
// file's pre-tokenization regex and tiktoken-style byte-pair merging, decodes with special-token policies.
// Depends on core and io only; knows nothing about weights or devices.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace quatre::tokenizer {

using TokenId = int32_t;

// What decode() does with special ids (< n_special()).
enum class SpecialTokenPolicy { kIgnore, kKeep, kRaise };

// tekken.json "image" (PROTOCOL §1.1, §2.10).
struct ImageConfig {
  int image_patch_size = 0;
  int max_image_size = 0;
  int spatial_merge_size = 1;
};

// One entry of "model_settings_builder" (PROTOCOL §2.9), e.g. reasoning_effort.
struct ModelSettingSpec {
  std::string name;                 // "reasoning_effort"
  bool accepts_none = true;
  std::optional<std::string> default_value;
  std::vector<std::string> values;  // allowed values, e.g. {"none", "high"}
};

class Tekken {
 public:
  // Loads and validates a tekken.json (PROTOCOL §1.1 loading rules). Throws LoadError naming the file
  // and the offending field.
  static Tekken load(const std::filesystem::path& path);
  // The same from JSON text; `origin` names the source in error messages.
  static Tekken from_json(std::string_view json_text, std::string_view origin);

  Tekken(Tekken&&) noexcept;
  Tekken& operator=(Tekken&&) noexcept;
  ~Tekken();

  // Plain text to BPE ids (PROTOCOL §1.4-1.5; never special ids: "[INST]" in the text is ordinary bytes).
  // Invalid UTF-8: before pre-tokenization, each maximal invalid subsequence of `text` is replaced by one
  // U+FFFD, exactly as Python's bytes.decode("utf-8", "replace") does. Surrogates encoded as 3 bytes
  // (ED A0..BF xx, CESU-8/WTF-8) are invalid UTF-8 too, so each becomes three U+FFFD (tiktoken, which gets a
  // Python str, turns a lone surrogate into one U+FFFD: callers holding UTF-16 should do that themselves).
  std::vector<TokenId> encode(std::string_view text) const;
  // The same, appended to `out` (lets a caller build a prompt without a vector per piece).
  void encode_into(std::string_view text, std::vector<TokenId>& out) const;
  // Ids to text (PROTOCOL §1.6). Throws InvalidRequest for an id out of range, or for a special id under kRaise.
  std::string decode(std::span<const TokenId> ids, SpecialTokenPolicy policy = SpecialTokenPolicy::kIgnore) const;

  std::optional<TokenId> special_id(std::string_view name) const;  // "[INST]" -> 3
  TokenId require_special(std::string_view name) const;            // throws LoadError when absent
  bool is_special(TokenId id) const { return id >= 0 && id < n_special(); }
  // The raw bytes of a BPE id, or the name of a special id. Throws InvalidRequest for an id out of range.
  std::string_view token_bytes(TokenId id) const;
  // decode({id}, kKeep): a partial UTF-8 piece shows as U+FFFD (PROTOCOL §1.6 id_to_piece).
  std::string id_to_piece(TokenId id) const;

  TokenId bos_id() const;  // "<s>"
  TokenId eos_id() const;  // "</s>"
  int32_t vocab_size() const;  // default_vocab_size, specials included
  int32_t n_special() const;   // default_num_special_tokens
  std::string_view version() const;  // "v15"
  const std::optional<ImageConfig>& image_config() const;
  const std::vector<ModelSettingSpec>& model_settings() const;

 private:
  struct Impl;
  explicit Tekken(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Streaming detokenizer: feed ids one at a time, get back only complete UTF-8 text (never half a
// character). For a run of non-special ids, the concatenated push() results plus flush() equal decode() of the
// run. Special ids are not text: feeding one is a CHECK failure (the output parser routes them). Since decode()
// decodes the runs between special ids independently, a caller that wants decode()'s text must flush() when it
// meets a special id (bytes of a character split by a special id become U+FFFD, as in decode()).
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tekken& tekken);
  std::string push(TokenId id);  // text that became complete with this token (may be empty)
  std::string flush();           // the incomplete tail, with U+FFFD replacement; resets the decoder

 private:
  const Tekken* tekken_;
  std::string pending_;  // bytes of an incomplete UTF-8 sequence (at most 3)
};

}  // namespace quatre::tokenizer
