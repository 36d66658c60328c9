// Loading and validating tekken.json (PROTOCOL.md §1.1 loading rules) into Tekken::Impl.
// Every rejection is a LoadError naming the file, the field and the value. Depends on core, fmt, nlohmann_json.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "core/error.h"
#include "tokenizer/tekken.h"
#include "tokenizer/tekken_impl.h"

namespace quatre::tokenizer {

namespace {

using nlohmann::json;

constexpr size_t kMaxTokenBytes = 65534;  // RankMap's limit; real tokens are far shorter

constexpr std::array<std::string_view, 7> kVersions = {"v1", "v2", "v3", "v7", "v11", "v13", "v15"};

// Names of ids 0..19, used when a file of version <= v7 has no special_tokens list (PROTOCOL §1.1 rule 4).
constexpr std::array<std::string_view, 20> kLegacySpecialNames = {
    "<unk>",          "<s>",           "</s>",     "[INST]",        "[/INST]",
    "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]",
    "[IMG]",          "<pad>",         "[IMG_BREAK]", "[IMG_END]",   "[PREFIX]",
    "[MIDDLE]",       "[SUFFIX]",      "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]"};

std::string_view type_name(const json& j) {
  switch (j.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    case json::value_t::number_float: return "a float";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    default: return "an unsupported JSON value";
  }
}

// Typed access to JSON fields; failures name the origin and the field path.
class Fields {
 public:
  explicit Fields(std::string_view origin) : origin_(origin) {}

  [[noreturn]] void fail(std::string_view path, std::string_view what) const {
    throw LoadError(fmt::format("{}: {} {}", origin_, path, what));
  }

  // The member, or nullptr when it is absent or null.
  const json* find(const json& object, std::string_view key) const {
    const auto it = object.find(key);
    return it == object.end() || it->is_null() ? nullptr : &*it;
  }
  const json& require(const json& object, std::string_view key, std::string_view path) const {
    const json* member = find(object, key);
    if (member == nullptr) fail(path, "is missing");
    return *member;
  }
  const json& expect(const json& j, json::value_t type, std::string_view path, std::string_view expected) const {
    if (j.type() != type) fail(path, fmt::format("is {}, expected {}", type_name(j), expected));
    return j;
  }
  int64_t integer(const json& j, std::string_view path) const {
    if (!j.is_number_integer()) fail(path, fmt::format("is {}, expected an integer", type_name(j)));
    if (j.is_number_unsigned() && j.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) fail(path, "is too large");
    return j.get<int64_t>();
  }
  int32_t positive_int32(const json& j, std::string_view path) const {
    const int64_t v = integer(j, path);
    if (v <= 0 || v > INT32_MAX) fail(path, fmt::format("is {}, expected a positive 32-bit integer", v));
    return static_cast<int32_t>(v);
  }
  const std::string& string(const json& j, std::string_view path) const {
    return expect(j, json::value_t::string, path, "a string").get_ref<const std::string&>();
  }
  bool boolean(const json& j, std::string_view path) const {
    return expect(j, json::value_t::boolean, path, "a boolean").get<bool>();
  }

 private:
  std::string_view origin_;
};

// Strict standard base64 (RFC 4648 alphabet, '=' padding only at the end, length a multiple of 4).
bool decode_base64(std::string_view text, std::string& out) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  out.clear();
  if (text.size() % 4 != 0) return false;
  for (size_t i = 0; i < text.size(); i += 4) {
    const bool is_last = i + 4 == text.size();
    const int n_pad = is_last ? (text[i + 3] == '=') + (text[i + 2] == '=' && text[i + 3] == '=') : 0;
    uint32_t group = 0;
    for (int k = 0; k < 4; ++k) {
      const int v = k >= 4 - n_pad ? 0 : value(text[i + k]);
      if (v < 0) return false;
      group = group << 6 | static_cast<uint32_t>(v);
    }
    out += static_cast<char>(group >> 16);
    if (n_pad < 2) out += static_cast<char>(group >> 8 & 0xFF);
    if (n_pad < 1) out += static_cast<char>(group & 0xFF);
  }
  return true;
}

int version_number(std::string_view version) { return std::stoi(std::string(version.substr(1))); }

RankMap load_vocab(const json& root, int32_t n_inner, const Fields& f) {
  const json& vocab = f.expect(f.require(root, "vocab", "vocab"), json::value_t::array, "vocab", "an array");
  if (vocab.size() < static_cast<size_t>(n_inner)) {
    f.fail("vocab", fmt::format("has {} entries, expected at least {} (default_vocab_size - "
                                "default_num_special_tokens)", vocab.size(), n_inner));
  }
  RankMap ranks(static_cast<size_t>(n_inner));
  std::string bytes;
  for (int32_t i = 0; i < n_inner; ++i) {  // entries past n_inner are discarded unread (rule 1)
    const json& entry = vocab[static_cast<size_t>(i)];
    auto path = [i](std::string_view field) { return fmt::format("vocab[{}]{}", i, field); };
    if (!entry.is_object()) f.fail(path(""), fmt::format("is {}, expected an object", type_name(entry)));
    const bool has_keys = entry.size() == 3 && entry.contains("rank") && entry.contains("token_bytes") &&
                          entry.contains("token_str");
    if (!has_keys) {
      std::string keys;
      for (const auto& [key, value] : entry.items()) keys += (keys.empty() ? "" : ", ") + key;
      f.fail(path(""), fmt::format("has keys [{}], expected exactly rank, token_bytes, token_str", keys));
    }
    // Paths are formatted only on failure: this loop runs 130k times at startup.
    const json& rank = entry["rank"];
    if (!rank.is_number_integer()) f.integer(rank, path(".rank"));  // throws
    if (rank.get<int64_t>() != i) f.fail(path(".rank"), fmt::format("is {}, expected {}", rank.get<int64_t>(), i));
    const json& token_bytes = entry["token_bytes"];
    if (!token_bytes.is_string()) f.string(token_bytes, path(".token_bytes"));  // throws
    const auto& base64 = token_bytes.get_ref<const std::string&>();
    if (!decode_base64(base64, bytes)) f.fail(path(".token_bytes"), fmt::format("'{}' is not valid base64", base64));
    const json& token_str = entry["token_str"];
    if (!token_str.is_null() && !token_str.is_string()) {
      f.fail(path(".token_str"), fmt::format("is {}, expected a string or null", type_name(token_str)));
    }
    if (i < 256 && (bytes.size() != 1 || static_cast<unsigned char>(bytes[0]) != i)) {
      f.fail(path(".token_bytes"), fmt::format("decodes to {} bytes, expected the single byte 0x{:02X}",
                                               bytes.size(), i));
    }
    if (bytes.empty() || bytes.size() > kMaxTokenBytes) {
      f.fail(path(".token_bytes"), fmt::format("decodes to {} bytes, expected 1 to {}", bytes.size(), kMaxTokenBytes));
    }
    if (const auto first = ranks.add_unique(bytes)) {
      f.fail(path(".token_bytes"), fmt::format("'{}' repeats the bytes of vocab[{}]", base64, *first));
    }
  }
  return ranks;
}

struct SpecialTable {
  std::vector<std::string> names;
  std::vector<bool> is_control;
  std::unordered_map<std::string, TokenId> by_name;
};

SpecialTable load_special_tokens(const json& root, int32_t n_special, int version, const Fields& f) {
  SpecialTable t;
  t.names.resize(static_cast<size_t>(n_special));
  t.is_control.assign(static_cast<size_t>(n_special), true);
  std::vector<bool> is_listed(static_cast<size_t>(n_special), false);
  const json* list = f.find(root, "special_tokens");
  if (list == nullptr) {
    if (version > 7) f.fail("special_tokens", fmt::format("is missing (required for version v{} > v7)", version));
    for (size_t id = 0; id < kLegacySpecialNames.size() && id < is_listed.size(); ++id) {
      t.names[id] = kLegacySpecialNames[id];
      is_listed[id] = true;
    }
  } else {
    f.expect(*list, json::value_t::array, "special_tokens", "an array");
    if (list->size() > static_cast<size_t>(n_special)) {
      f.fail("special_tokens", fmt::format("has {} entries, more than default_num_special_tokens = {}",
                                           list->size(), n_special));
    }
    for (size_t k = 0; k < list->size(); ++k) {
      const json& entry = (*list)[k];
      auto path = [k](std::string_view field) { return fmt::format("special_tokens[{}]{}", k, field); };
      f.expect(entry, json::value_t::object, path(""), "an object");
      const int64_t rank = f.integer(f.require(entry, "rank", path(".rank")), path(".rank"));
      if (rank < 0 || rank >= n_special) {
        f.fail(path(".rank"), fmt::format("is {}, expected 0 <= rank < default_num_special_tokens = {}", rank,
                                          n_special));
      }
      const auto id = static_cast<size_t>(rank);
      if (is_listed[id]) f.fail(path(".rank"), fmt::format("is {}, which an earlier entry already uses", rank));
      is_listed[id] = true;
      t.names[id] = f.string(f.require(entry, "token_str", path(".token_str")), path(".token_str"));
      if (const json* is_control = f.find(entry, "is_control")) {
        t.is_control[id] = f.boolean(*is_control, path(".is_control"));
      }
    }
  }
  for (size_t id = 0; id < t.names.size(); ++id) {
    if (!is_listed[id]) t.names[id] = fmt::format("<SPECIAL_{}>", id);
    const auto [it, is_new] = t.by_name.emplace(t.names[id], static_cast<TokenId>(id));
    if (!is_new) {
      f.fail("special_tokens", fmt::format("name '{}' is used by both id {} and id {}", t.names[id], it->second, id));
    }
  }
  return t;
}

std::optional<ImageConfig> load_image_config(const json& root, int version, const Fields& f) {
  const json* image = f.find(root, "image");
  const json* multimodal = f.find(root, "multimodal");
  if (image != nullptr && multimodal != nullptr) f.fail("multimodal", "and image are both present; keep only image");
  if (multimodal != nullptr && version > 11) {
    f.fail("multimodal", fmt::format("is a deprecated alias of image, only legal up to v11 (the file is v{})",
                                     version));
  }
  const json* src = image != nullptr ? image : multimodal;
  if (src == nullptr) return std::nullopt;
  const std::string_view key = image != nullptr ? "image" : "multimodal";
  f.expect(*src, json::value_t::object, key, "an object");
  auto path = [key](std::string_view field) { return fmt::format("{}.{}", key, field); };
  ImageConfig c;
  c.image_patch_size = f.positive_int32(f.require(*src, "image_patch_size", path("image_patch_size")),
                                        path("image_patch_size"));
  c.max_image_size = f.positive_int32(f.require(*src, "max_image_size", path("max_image_size")),
                                      path("max_image_size"));
  if (const json* merge = f.find(*src, "spatial_merge_size")) {
    c.spatial_merge_size = f.positive_int32(*merge, path("spatial_merge_size"));
  }
  return c;
}

std::vector<ModelSettingSpec> load_model_settings(const json& root, int version, const Fields& f) {
  const json* builder = f.find(root, "model_settings_builder");
  if (builder == nullptr) return {};
  if (version < 15) {
    f.fail("model_settings_builder", fmt::format("is only legal from v15 on (the file is v{})", version));
  }
  f.expect(*builder, json::value_t::object, "model_settings_builder", "an object");
  std::vector<ModelSettingSpec> settings;
  for (const auto& [name, spec] : builder->items()) {
    auto path = [&name = name](std::string_view field) {
      return fmt::format("model_settings_builder.{}{}", name, field);
    };
    f.expect(spec, json::value_t::object, path(""), "an object");
    const std::string& type = f.string(f.require(spec, "type", path(".type")), path(".type"));
    if (type != "enum") f.fail(path(".type"), fmt::format("is '{}', expected 'enum'", type));
    ModelSettingSpec s;
    s.name = name;
    if (const json* accepts_none = f.find(spec, "accepts_none")) {
      s.accepts_none = f.boolean(*accepts_none, path(".accepts_none"));
    }
    if (const json* values = f.find(spec, "values")) {
      f.expect(*values, json::value_t::array, path(".values"), "an array");
      for (size_t k = 0; k < values->size(); ++k) {
        s.values.push_back(f.string((*values)[k], fmt::format("{}[{}]", path(".values"), k)));
      }
    }
    if (const json* default_value = f.find(spec, "default")) {
      s.default_value = f.string(*default_value, path(".default"));
      if (std::find(s.values.begin(), s.values.end(), *s.default_value) == s.values.end()) {
        f.fail(path(".default"), fmt::format("is '{}', which is not one of its values", *s.default_value));
      }
    }
    settings.push_back(std::move(s));
  }
  return settings;
}

}  // namespace

Tekken Tekken::from_json(std::string_view json_text, std::string_view origin) {
  const Fields f(origin);
  json root;
  try {
    root = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {
    throw LoadError(fmt::format("{}: not valid JSON: {}", origin, e.what()));
  }
  if (!root.is_object()) throw LoadError(fmt::format("{}: is {}, expected a JSON object", origin, type_name(root)));

  const json& config = f.expect(f.require(root, "config", "config"), json::value_t::object, "config", "an object");
  const std::string& version = f.string(f.require(config, "version", "config.version"), "config.version");
  if (std::find(kVersions.begin(), kVersions.end(), version) == kVersions.end()) {
    f.fail("config.version", fmt::format("is '{}', expected one of v1, v2, v3, v7, v11, v13, v15", version));
  }
  const int version_n = version_number(version);
  const int32_t vocab_size = f.positive_int32(f.require(config, "default_vocab_size", "config.default_vocab_size"),
                                              "config.default_vocab_size");
  const int32_t n_special = f.positive_int32(
      f.require(config, "default_num_special_tokens", "config.default_num_special_tokens"),
      "config.default_num_special_tokens");
  const int32_t n_inner = vocab_size - n_special;
  if (n_inner < 256) {
    f.fail("config.default_vocab_size", fmt::format("is {} with {} special tokens, which leaves {} BPE ranks; at least "
                                                    "256 are needed (one per byte)", vocab_size, n_special, n_inner));
  }
  const std::string& pattern = f.string(f.require(config, "pattern", "config.pattern"), "config.pattern");

  SpecialTable specials = load_special_tokens(root, n_special, version_n, f);
  auto special = [&](std::string_view name, std::string_view role) {
    const auto it = specials.by_name.find(std::string(name));
    if (it == specials.by_name.end()) f.fail("special_tokens", fmt::format("has no '{}' ({})", name, role));
    return it->second;
  };
  const TokenId bos = special("<s>", "BOS");
  const TokenId eos = special("</s>", "EOS");

  auto impl = std::make_unique<Impl>(Impl{
      .origin = std::string(origin),
      .version = version,
      .vocab_size = vocab_size,
      .n_special = n_special,
      .ranks = load_vocab(root, n_inner, f),
      .special_names = std::move(specials.names),
      .special_is_control = std::move(specials.is_control),
      .special_by_name = std::move(specials.by_name),
      .pretokenizer = PreTokenizer(pattern, origin),
      .image = load_image_config(root, version_n, f),
      .model_settings = load_model_settings(root, version_n, f),
      .bos = bos,
      .eos = eos,
  });
  return Tekken(std::move(impl));
}

Tekken Tekken::load(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw LoadError(fmt::format("{}: cannot open the tokenizer file", path.string()));
  std::ostringstream text;
  text << in.rdbuf();
  if (!in && !in.eof()) throw LoadError(fmt::format("{}: read error", path.string()));
  return from_json(text.str(), path.string());
}

}  // namespace quatre::tokenizer
