// TokenConstraint: the hook through which constrained decoding (JSON object / JSON schema / forced tool calls,
// src/grammar) restricts which token a request may sample next. The engine calls mask() on the request's logits
// after penalties and logit bias and before temperature/top-k/top-p, then accept() with the sampled token.
// Depends on the standard library only, so any layer above engine can implement it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

namespace quatre::engine {

class TokenConstraint {
 public:
  virtual ~TokenConstraint() = default;
  // Sets to -infinity the logit of every token that may not come next ([V] logits of one request). When the
  // constrained text is complete, only the end-of-sequence token is allowed.
  virtual void mask(std::span<float> logits) = 0;
  // Advances the state by the token just sampled. Throws InvalidRequest when the token was not allowed.
  virtual void accept(int32_t token) = 0;
  // True once the constrained text is complete (the engine then ends the request with finish "stop").
  virtual bool is_complete() const = 0;
  // An independent copy in the same state: each of a request's n choices gets its own.
  virtual std::unique_ptr<TokenConstraint> clone() const = 0;
};

}  // namespace quatre::engine
