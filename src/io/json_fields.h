// Typed access to JSON config fields with errors that name the file and the key path
// ("config.json: text_config.hidden_size: expected a positive integer, got -3"). Depends on core.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace quatre::io {

class JsonFields {
 public:
  // `object` must outlive this; `path` is the key path of `object` inside the file ("" for the root).
  JsonFields(const nlohmann::json& object, std::string_view origin, std::string path = "");

  bool has(std::string_view key) const;  // present and not null
  int64_t integer(std::string_view key) const;
  int64_t integer_or(std::string_view key, int64_t fallback) const;
  double number(std::string_view key) const;
  double number_or(std::string_view key, double fallback) const;
  bool boolean_or(std::string_view key, bool fallback) const;
  std::string string(std::string_view key) const;
  std::string string_or(std::string_view key, std::string_view fallback) const;
  JsonFields object(std::string_view key) const;
  std::optional<JsonFields> object_if(std::string_view key) const;

  // An integer-valued key that must equal `expected` when present (unsupported variants of the model).
  void require_integer_if_present(std::string_view key, int64_t expected, std::string_view why) const;
  void require_string_if_present(std::string_view key, std::string_view expected, std::string_view why) const;
  void require_bool_if_present(std::string_view key, bool expected, std::string_view why) const;

  [[noreturn]] void fail(std::string_view key, std::string_view message) const;
  std::string key_path(std::string_view key) const;
  const nlohmann::json& json() const { return *object_; }

 private:
  const nlohmann::json& at(std::string_view key) const;
  const nlohmann::json* object_;
  std::string origin_;
  std::string path_;
};

}  // namespace quatre::io
