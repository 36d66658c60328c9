// PreTokenizer (see pretokenize.h): PCRE2 8-bit with UTF + UCP, JIT-compiled, one match data per thread.
// Depends on core (errors, CHECK), fmt, PCRE2 and utf8.h.
#include "tokenizer/pretokenize.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <fmt/format.h>

#include <stdexcept>

#include "core/check.h"
#include "core/error.h"
#include "tokenizer/utf8.h"

namespace quatre::tokenizer {

namespace {

// Unicode White_Space (PropList.txt), as a character-class body.
constexpr std::string_view kWhiteSpaceClassBody =
    "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  const int n = pcre2_get_error_message(code, buffer, sizeof(buffer));
  return n < 0 ? fmt::format("PCRE2 error {}", code) : std::string(reinterpret_cast<const char*>(buffer), n);
}

// Per-thread matching state: match data (one ovector pair is enough: we only need the whole match) and a JIT
// stack large enough for long backtracking runs.
struct ThreadMatchState {
  pcre2_match_data* match_data = pcre2_match_data_create(1, nullptr);
  pcre2_match_context* match_context = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* jit_stack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
  ThreadMatchState() {
    CHECK(match_data && match_context && jit_stack) << "PCRE2 allocation failed";
    pcre2_jit_stack_assign(match_context, nullptr, jit_stack);
  }
  ~ThreadMatchState() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(match_context);
    pcre2_match_data_free(match_data);
  }
  ThreadMatchState(const ThreadMatchState&) = delete;
  ThreadMatchState& operator=(const ThreadMatchState&) = delete;
};

ThreadMatchState& thread_match_state() {
  thread_local ThreadMatchState state;
  return state;
}

}  // namespace

std::string rewrite_whitespace_classes(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 256);
  bool is_in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      if (e == 'Q') throw std::invalid_argument("\\Q...\\E quoting is not supported");
      if (e == 's') {
        out += is_in_class ? fmt::format("{}", kWhiteSpaceClassBody) : fmt::format("[{}]", kWhiteSpaceClassBody);
      } else if (e == 'S') {
        if (is_in_class) throw std::invalid_argument("\\S inside a character class is not supported");
        out += fmt::format("[^{}]", kWhiteSpaceClassBody);
      } else {
        out += c;
        out += e;
      }
      continue;
    }
    out += c;
    if (!is_in_class && c == '[') {
      is_in_class = true;
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
    } else if (is_in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
      const size_t close = pattern.find(":]", i + 2);  // POSIX class such as [:alpha:]
      if (close == std::string_view::npos) throw std::invalid_argument("unterminated POSIX class");
      out.append(pattern.substr(i + 1, close + 1 - i));
      i = close + 1;
    } else if (is_in_class && c == ']') {
      is_in_class = false;
    }
  }
  return out;
}

struct PreTokenizer::Compiled {
  pcre2_code* code = nullptr;
  bool is_jit = false;
  ~Compiled() { pcre2_code_free(code); }
};

PreTokenizer::PreTokenizer(std::string_view pattern, std::string_view origin)
    : compiled_(std::make_unique<Compiled>()) {
  std::string rewritten;
  try {
    rewritten = rewrite_whitespace_classes(pattern);
  } catch (const std::invalid_argument& e) {
    throw LoadError(fmt::format("{}: config.pattern cannot be used: {}", origin, e.what()));
  }
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  compiled_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(rewritten.data()), rewritten.size(),
                                  PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  if (compiled_->code == nullptr) {
    throw LoadError(fmt::format("{}: config.pattern does not compile with PCRE2 (UTF, UCP): {} at offset {} of "
                                "the rewritten pattern '{}'",
                                origin, pcre2_message(error_code), error_offset, rewritten));
  }
  // Without JIT (unsupported platform) matching still works, only slower.
  compiled_->is_jit = pcre2_jit_compile(compiled_->code, PCRE2_JIT_COMPLETE) == 0;
}

PreTokenizer::PreTokenizer(PreTokenizer&&) noexcept = default;
PreTokenizer& PreTokenizer::operator=(PreTokenizer&&) noexcept = default;
PreTokenizer::~PreTokenizer() = default;

bool PreTokenizer::is_jit() const { return compiled_->is_jit; }

bool PreTokenizer::next_piece(std::string_view text, size_t& pos, std::string_view& piece) const {
  ThreadMatchState& state = thread_match_state();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  while (pos < text.size()) {
    const int rc = compiled_->is_jit
                       ? pcre2_jit_match(compiled_->code, subject, text.size(), pos, 0, state.match_data,
                                         state.match_context)
                       : pcre2_match(compiled_->code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK,
                                     state.match_data, state.match_context);
    if (rc == PCRE2_ERROR_NOMATCH) return false;
    if (rc < 0) {
      throw InvalidRequest(fmt::format("pre-tokenization failed at byte {} of a {}-byte text: {}", pos,
                                       text.size(), pcre2_message(rc)));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.match_data);
    const size_t start = ovector[0];
    const size_t end = ovector[1];
    if (end == start) {  // an empty match (impossible with the Tekken pattern): step over one character
      pos = start + 1;
      while (pos < text.size() && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) ++pos;
      continue;
    }
    piece = text.substr(start, end - start);
    pos = end;
    return true;
  }
  return false;
}

std::vector<std::string_view> PreTokenizer::split(std::string_view text) const {
  // The JIT matcher does not check UTF-8 (encode repairs text first); this entry point is for tests and tools.
  CHECK(utf8::valid_prefix_length(text) == text.size()) << "PreTokenizer::split needs valid UTF-8";
  std::vector<std::string_view> pieces;
  size_t pos = 0;
  std::string_view piece;
  while (next_piece(text, pos, piece)) pieces.push_back(piece);
  return pieces;
}

}  // namespace quatre::tokenizer
