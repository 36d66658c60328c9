// Tekken::decode with special-token policies (PROTOCOL.md §1.6) and the streaming IncrementalDecoder.
// Depends on core and the tokenizer's internal headers.
#include <fmt/format.h>

#include "core/check.h"
#include "core/error.h"
#include "tokenizer/tekken.h"
#include "tokenizer/tekken_impl.h"
#include "tokenizer/utf8.h"

namespace quatre::tokenizer {

// Maximal runs of non-special ids are decoded independently (their concatenated bytes, with replacement), so a
// character split by a special token becomes U+FFFD on both sides, as upstream does.
std::string Tekken::decode(std::span<const TokenId> ids, SpecialTokenPolicy policy) const {
  for (const TokenId id : ids) {
    if (id < 0 || id >= impl_->vocab_size) {
      throw InvalidRequest(fmt::format("token id {} is out of range [0, {})", id, impl_->vocab_size));
    }
  }
  std::string text;
  std::string run_bytes;
  size_t i = 0;
  while (i < ids.size()) {
    if (is_special(ids[i])) {
      if (policy == SpecialTokenPolicy::kRaise) {
        throw InvalidRequest(fmt::format("decoding special token {} ('{}') is not allowed here", ids[i],
                                         impl_->special_names[static_cast<size_t>(ids[i])]));
      }
      if (policy == SpecialTokenPolicy::kKeep) text += impl_->special_names[static_cast<size_t>(ids[i])];
      ++i;
      continue;
    }
    run_bytes.clear();
    for (; i < ids.size() && !is_special(ids[i]); ++i) run_bytes += impl_->ranks.bytes(ids[i] - impl_->n_special);
    utf8::append_replacing_invalid(run_bytes, text);
  }
  return text;
}

std::string Tekken::id_to_piece(TokenId id) const {
  return decode(std::span<const TokenId>(&id, 1), SpecialTokenPolicy::kKeep);
}

IncrementalDecoder::IncrementalDecoder(const Tekken& tekken) : tekken_(&tekken) {}

std::string IncrementalDecoder::push(TokenId id) {
  CHECK(!tekken_->is_special(id)) << "special id " << id << " fed to IncrementalDecoder; route it before decoding";
  pending_ += tekken_->token_bytes(id);  // throws InvalidRequest when out of range
  // The stable prefix decodes the same whatever follows, and it ends on a unit boundary of the whole-sequence
  // decode (the kept tail starts with a lead byte), so push()* + flush() == decode(all ids).
  const size_t n_stable = utf8::stable_prefix_length(pending_);
  std::string text;
  utf8::append_replacing_invalid(std::string_view(pending_).substr(0, n_stable), text);
  pending_.erase(0, n_stable);
  CHECK(pending_.size() <= 3) << "an incomplete UTF-8 character has at most 3 bytes, kept " << pending_.size();
  return text;
}

std::string IncrementalDecoder::flush() {
  std::string text;
  utf8::append_replacing_invalid(pending_, text);
  pending_.clear();
  return text;
}

}  // namespace quatre::tokenizer
