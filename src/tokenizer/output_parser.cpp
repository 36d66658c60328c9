// Whole and streaming parsing of generated ids into reasoning, content and tool calls (PROTOCOL §3.3, §3.4).
// The two are written independently, the whole parse from the spec's index rules and the streaming parse as a
// state machine, so that the property test comparing them checks both. Depends on the Tekken API only.
#include <algorithm>
#include <random>

#include "tokenizer/output_parser.h"

namespace quatre::tokenizer {

ToolCallIdGenerator random_tool_call_ids(uint64_t seed) {
  return [rng = std::mt19937_64(seed)]() mutable {
    static constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    std::uniform_int_distribution<size_t> pick(0, kAlphabet.size() - 1);
    std::string id(9, ' ');
    for (char& c : id) c = kAlphabet[pick(rng)];
    return id;
  };
}

ToolCallIdGenerator random_tool_call_ids() {
  std::random_device device;
  return random_tool_call_ids(static_cast<uint64_t>(device()) << 32 | device());
}

OutputTokens OutputTokens::of(const Tekken& tekken) {
  return OutputTokens{.eos = tekken.special_id("</s>"),
                      .think = tekken.special_id("[THINK]"),
                      .end_think = tekken.special_id("[/THINK]"),
                      .tool_calls = tekken.special_id("[TOOL_CALLS]"),
                      .args = tekken.special_id("[ARGS]")};
}

OutputDelta OutputDelta::reasoning(std::string text) {
  OutputDelta d;
  d.kind = Kind::kReasoning;
  d.text = std::move(text);
  return d;
}

OutputDelta OutputDelta::content(std::string text) {
  OutputDelta d;
  d.kind = Kind::kContent;
  d.text = std::move(text);
  return d;
}

OutputDelta OutputDelta::call_start(int tool_index, std::string tool_call_id, std::string name) {
  OutputDelta d;
  d.kind = Kind::kToolCallStart;
  d.tool_index = tool_index;
  d.tool_call_id = std::move(tool_call_id);
  d.name = std::move(name);
  return d;
}

OutputDelta OutputDelta::arguments(int tool_index, std::string text) {
  OutputDelta d;
  d.kind = Kind::kToolCallArguments;
  d.tool_index = tool_index;
  d.text = std::move(text);
  return d;
}

namespace {

bool is(TokenId id, const std::optional<TokenId>& special) { return special && id == *special; }

constexpr std::string_view kAsciiSpace = " \t\n\r\f\v";

std::string trim_ascii(std::string_view s) {
  const size_t b = s.find_first_not_of(kAsciiSpace);
  if (b == std::string_view::npos) return "";
  const size_t e = s.find_last_not_of(kAsciiSpace);
  return std::string(s.substr(b, e - b + 1));
}

// A piece of the body: ids [begin, end) of the generated sequence. The body is one or two pieces (the think
// block cut out), and a piece boundary splits decoding runs like a special id does.
struct Piece {
  size_t begin;
  size_t end;
};

class WholeParser {
 public:
  WholeParser(std::span<const TokenId> ids, const Tekken& tekken)
      : ids_(ids), tekken_(tekken), tokens_(OutputTokens::of(tekken)) {}

  ParsedOutput parse(const ToolCallIdGenerator& next_id) {
    size_t n = ids_.size();
    for (size_t i = 0; i < n; ++i) {
      if (is(ids_[i], tokens_.eos)) n = i;
    }
    ParsedOutput out;
    std::vector<Piece> body;
    const size_t t = find(Piece{0, n}, tokens_.think);
    if (t == n) {
      body.push_back({0, n});
    } else {
      const size_t e = find(Piece{t + 1, n}, tokens_.end_think);
      std::string reasoning = decode({{t + 1, e}});
      if (!reasoning.empty()) out.reasoning = std::move(reasoning);
      body.push_back({0, t});
      if (e < n) body.push_back({e + 1, n});
    }
    // Positions of [TOOL_CALLS] in body order; segments lie between them.
    std::vector<std::pair<size_t, size_t>> markers;  // (piece index, id index)
    for (size_t p = 0; p < body.size(); ++p) {
      for (size_t i = body[p].begin; i < body[p].end; ++i) {
        if (is(ids_[i], tokens_.tool_calls)) markers.emplace_back(p, i);
      }
    }
    const auto range = [&](std::pair<size_t, size_t> from, std::pair<size_t, size_t> to) {
      // The body pieces between id `from` (inclusive) and id `to` (exclusive), as pieces.
      std::vector<Piece> r;
      for (size_t p = from.first; p <= to.first && p < body.size(); ++p) {
        const size_t b = p == from.first ? from.second : body[p].begin;
        const size_t e = p == to.first ? to.second : body[p].end;
        if (b < e) r.push_back({b, e});
      }
      return r;
    };
    const std::pair<size_t, size_t> body_end{body.size() - 1, body.back().end};
    out.content = decode(range({0, body[0].begin}, markers.empty() ? body_end : markers[0]));
    for (size_t k = 0; k < markers.size(); ++k) {
      const std::pair<size_t, size_t> start{markers[k].first, markers[k].second + 1};
      const std::vector<Piece> segment = range(start, k + 1 < markers.size() ? markers[k + 1] : body_end);
      if (auto call = parse_segment(segment, next_id)) out.tool_calls.push_back(std::move(*call));
    }
    return out;
  }

 private:
  size_t find(Piece p, const std::optional<TokenId>& special) const {
    for (size_t i = p.begin; i < p.end; ++i) {
      if (is(ids_[i], special)) return i;
    }
    return p.end;
  }

  // The text of the pieces: runs of non-special ids decoded on their own, special ids dropped.
  std::string decode(const std::vector<Piece>& pieces) const {
    std::string text;
    for (const Piece& p : pieces) text += tekken_.decode(ids_.subspan(p.begin, p.end - p.begin));
    return text;
  }

  std::optional<ParsedToolCall> parse_segment(const std::vector<Piece>& segment, const ToolCallIdGenerator& next_id) {
    // Split the segment at its first [ARGS].
    std::vector<Piece> before, after;
    bool has_args = false;
    for (const Piece& p : segment) {
      if (has_args) {
        after.push_back(p);
        continue;
      }
      const size_t a = find(p, tokens_.args);
      if (a < p.end) {
        has_args = true;
        before.push_back({p.begin, a});
        after.push_back({a + 1, p.end});
      } else {
        before.push_back(p);
      }
    }
    const std::string name_text = decode(before);
    ParsedToolCall call;
    if (const size_t brace = name_text.find('{'); brace != std::string::npos) {
      call.name = trim_ascii(std::string_view(name_text).substr(0, brace));
      call.arguments = name_text.substr(brace) + decode(after);
    } else if (has_args) {
      call.name = trim_ascii(name_text);
      call.arguments = decode(after);
    } else {
      return std::nullopt;  // neither [ARGS] nor '{': not a call
    }
    if (call.arguments.empty()) call.arguments = "{}";
    call.id = next_id();
    return call;
  }

  std::span<const TokenId> ids_;
  const Tekken& tekken_;
  OutputTokens tokens_;
};

}  // namespace

ParsedOutput parse_output(std::span<const TokenId> ids, const Tekken& tekken, const ToolCallIdGenerator& next_id) {
  return WholeParser(ids, tekken).parse(next_id);
}

StreamingOutputParser::StreamingOutputParser(const Tekken& tekken, ToolCallIdGenerator next_id)
    : tekken_(&tekken), tokens_(OutputTokens::of(tekken)), decoder_(tekken), next_id_(std::move(next_id)) {}

std::vector<OutputDelta> StreamingOutputParser::push(TokenId id) {
  std::vector<OutputDelta> out;
  if (is_finished_) return out;
  if (is(id, tokens_.eos)) return finish();
  if (tekken_->is_special(id)) {
    route_text(decoder_.flush(), out);  // a special id ends the decoding run
    route_special(id, out);
  } else {
    route_text(decoder_.push(id), out);
  }
  return out;
}

std::vector<OutputDelta> StreamingOutputParser::finish() {
  std::vector<OutputDelta> out;
  if (is_finished_) return out;
  route_text(decoder_.flush(), out);
  close_segment(out);  // also when a think block is still open: the call before it has ended
  is_finished_ = true;
  return out;
}

void StreamingOutputParser::route_special(TokenId id, std::vector<OutputDelta>& out) {
  if (phase_ == Phase::kBeforeThink && is(id, tokens_.think)) {
    phase_ = Phase::kInThink;
  } else if (phase_ == Phase::kInThink) {
    if (is(id, tokens_.end_think)) phase_ = Phase::kAfterThink;
  } else if (is(id, tokens_.tool_calls)) {
    close_segment(out);
    body_ = Body::kName;
  } else if (is(id, tokens_.args) && body_ == Body::kName) {
    start_call(name_text_, out);
  }
  // Any other special id is dropped.
}

void StreamingOutputParser::route_text(std::string text, std::vector<OutputDelta>& out) {
  if (text.empty()) return;
  if (phase_ == Phase::kInThink) {
    out.push_back(OutputDelta::reasoning(std::move(text)));
    return;
  }
  switch (body_) {
    case Body::kContent:
      out.push_back(OutputDelta::content(std::move(text)));
      break;
    case Body::kName: {
      name_text_ += text;
      const size_t brace = name_text_.find('{');
      if (brace == std::string::npos) break;
      std::string arguments = name_text_.substr(brace);
      start_call(std::string_view(name_text_).substr(0, brace), out);
      emit_arguments(std::move(arguments), out);
      break;
    }
    case Body::kArgs:
      emit_arguments(std::move(text), out);
      break;
  }
}

void StreamingOutputParser::start_call(std::string_view name, std::vector<OutputDelta>& out) {
  out.push_back(OutputDelta::call_start(n_calls_, next_id_(), trim_ascii(name)));
  ++n_calls_;
  body_ = Body::kArgs;
  name_text_.clear();
  has_arguments_ = false;
}

void StreamingOutputParser::emit_arguments(std::string text, std::vector<OutputDelta>& out) {
  if (text.empty()) return;
  has_arguments_ = true;
  out.push_back(OutputDelta::arguments(n_calls_ - 1, std::move(text)));
}

// Ends the current [TOOL_CALLS] segment: a call without argument text gets "{}"; a name that never reached
// [ARGS] or '{' is dropped.
void StreamingOutputParser::close_segment(std::vector<OutputDelta>& out) {
  if (body_ == Body::kArgs && !has_arguments_) emit_arguments("{}", out);
  name_text_.clear();
  if (body_ != Body::kContent) body_ = Body::kName;
}

}  // namespace quatre::tokenizer
