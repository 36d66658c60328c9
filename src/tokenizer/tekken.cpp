// Tekken: construction, accessors and encode (pre-tokenize, then BPE each piece). Loading is in
// tekken_load.cpp, decoding in decode.cpp. Depends on core and the tokenizer's internal headers.
#include "tokenizer/tekken.h"

#include <fmt/format.h>

#include "core/error.h"
#include "tokenizer/bpe.h"
#include "tokenizer/tekken_impl.h"
#include "tokenizer/utf8.h"

namespace quatre::tokenizer {

Tekken::Tekken(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tekken::Tekken(Tekken&&) noexcept = default;
Tekken& Tekken::operator=(Tekken&&) noexcept = default;
Tekken::~Tekken() = default;

std::vector<TokenId> Tekken::encode(std::string_view text) const {
  std::vector<TokenId> ids;
  ids.reserve(text.size() / 3 + 1);
  encode_into(text, ids);
  return ids;
}

void Tekken::encode_into(std::string_view text, std::vector<TokenId>& out) const {
  std::string repaired;
  const size_t n_valid = utf8::valid_prefix_length(text);
  if (n_valid != text.size()) {
    repaired.reserve(text.size() + 16);
    repaired.append(text.substr(0, n_valid));
    utf8::append_replacing_invalid(text.substr(n_valid), repaired);
    text = repaired;
  }
  size_t pos = 0;
  std::string_view piece;
  while (impl_->pretokenizer.next_piece(text, pos, piece)) bpe_encode(piece, impl_->ranks, impl_->n_special, out);
}

std::optional<TokenId> Tekken::special_id(std::string_view name) const {
  const auto it = impl_->special_by_name.find(std::string(name));
  if (it == impl_->special_by_name.end()) return std::nullopt;
  return it->second;
}

TokenId Tekken::require_special(std::string_view name) const {
  if (const auto id = special_id(name)) return *id;
  throw LoadError(fmt::format("{}: the tokenizer has no special token '{}'", impl_->origin, name));
}

std::string_view Tekken::token_bytes(TokenId id) const {
  if (id < 0 || id >= impl_->vocab_size) {
    throw InvalidRequest(fmt::format("token id {} is out of range [0, {})", id, impl_->vocab_size));
  }
  if (is_special(id)) return impl_->special_names[static_cast<size_t>(id)];
  return impl_->ranks.bytes(id - impl_->n_special);
}

TokenId Tekken::bos_id() const { return impl_->bos; }
TokenId Tekken::eos_id() const { return impl_->eos; }
int32_t Tekken::vocab_size() const { return impl_->vocab_size; }
int32_t Tekken::n_special() const { return impl_->n_special; }
std::string_view Tekken::version() const { return impl_->version; }
const std::optional<ImageConfig>& Tekken::image_config() const { return impl_->image; }
const std::vector<ModelSettingSpec>& Tekken::model_settings() const { return impl_->model_settings; }

}  // namespace quatre::tokenizer
