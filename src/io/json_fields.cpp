// Typed JSON config field access with key-path error messages.
#include "io/json_fields.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include <fmt/format.h>

#include "core/error.h"

namespace quatre::io {

JsonFields::JsonFields(const nlohmann::json& object, std::string_view origin, std::string path)
    : object_(&object), origin_(origin), path_(std::move(path)) {
  if (!object_->is_object()) {
    throw LoadError(fmt::format("{}: {}: expected a JSON object, got {}", origin_, path_.empty() ? "<root>" : path_,
                                object_->type_name()));
  }
}

std::string JsonFields::key_path(std::string_view key) const {
  return path_.empty() ? std::string(key) : fmt::format("{}.{}", path_, key);
}

void JsonFields::fail(std::string_view key, std::string_view message) const {
  throw LoadError(fmt::format("{}: {}: {}", origin_, key_path(key), message));
}

bool JsonFields::has(std::string_view key) const {
  const auto it = object_->find(key);
  return it != object_->end() && !it->is_null();
}

const nlohmann::json& JsonFields::at(std::string_view key) const {
  const auto it = object_->find(key);
  if (it == object_->end() || it->is_null()) fail(key, "missing");
  return *it;
}

int64_t JsonFields::integer(std::string_view key) const {
  const nlohmann::json& v = at(key);
  if (v.is_number_unsigned()) {
    // Above INT64_MAX it would wrap to a negative value (18446744073709551615 would read as -1).
    if (v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return v.get<int64_t>();
  } else if (v.is_number_integer()) {
    return v.get<int64_t>();
  } else if (v.is_number_float()) {
    // 4096.0 is accepted as 4096; 4096.5 is not, nor a value outside int64 (casting it would be undefined).
    const double d = v.get<double>();
    if (d >= -0x1p63 && d < 0x1p63 && d == std::trunc(d)) return static_cast<int64_t>(d);
  }
  fail(key, fmt::format("expected an integer, got {}", v.dump()));
}

int64_t JsonFields::integer_or(std::string_view key, int64_t fallback) const { return has(key) ? integer(key) : fallback; }

double JsonFields::number(std::string_view key) const {
  const nlohmann::json& v = at(key);
  if (!v.is_number()) fail(key, fmt::format("expected a number, got {}", v.dump()));
  return v.get<double>();
}

double JsonFields::number_or(std::string_view key, double fallback) const { return has(key) ? number(key) : fallback; }

bool JsonFields::boolean_or(std::string_view key, bool fallback) const {
  if (!has(key)) return fallback;
  const nlohmann::json& v = at(key);
  if (!v.is_boolean()) fail(key, fmt::format("expected true or false, got {}", v.dump()));
  return v.get<bool>();
}

std::string JsonFields::string(std::string_view key) const {
  const nlohmann::json& v = at(key);
  if (!v.is_string()) fail(key, fmt::format("expected a string, got {}", v.dump()));
  return v.get<std::string>();
}

std::string JsonFields::string_or(std::string_view key, std::string_view fallback) const {
  return has(key) ? string(key) : std::string(fallback);
}

JsonFields JsonFields::object(std::string_view key) const {
  const nlohmann::json& v = at(key);
  if (!v.is_object()) fail(key, fmt::format("expected an object, got {}", v.type_name()));
  return JsonFields(v, origin_, key_path(key));
}

std::optional<JsonFields> JsonFields::object_if(std::string_view key) const {
  if (!has(key)) return std::nullopt;
  return object(key);
}

void JsonFields::require_integer_if_present(std::string_view key, int64_t expected, std::string_view why) const {
  if (has(key) && integer(key) != expected) {
    fail(key, fmt::format("is {}, but only {} is supported ({})", at(key).dump(), expected, why));
  }
}

void JsonFields::require_string_if_present(std::string_view key, std::string_view expected, std::string_view why) const {
  if (has(key) && string(key) != expected) {
    fail(key, fmt::format("is \"{}\", but only \"{}\" is supported ({})", string(key), expected, why));
  }
}

void JsonFields::require_bool_if_present(std::string_view key, bool expected, std::string_view why) const {
  if (has(key) && boolean_or(key, expected) != expected) {
    fail(key, fmt::format("is {}, but only {} is supported ({})", !expected, expected, why));
  }
}

}  // namespace quatre::io
