// StopMatcher: OpenAI `stop` strings over streamed text. Text that could still be the start of a stop string
// is held back, so a partial stop string is never sent; a match ends the text just before it.
// Depends on the standard library only.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace quatre::server {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);
  // Appends `text`; returns what is now certain to precede any stop string. After a match, returns the
  // text before the match once, then "" forever.
  std::string push(const std::string& text);
  // End of the text: what was held back (empty after a match).
  std::string finish();
  // The stop string that matched (the earliest in the text; among those, the first listed).
  const std::optional<std::string>& matched() const { return matched_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  std::optional<std::string> matched_;
};

}  // namespace quatre::server
