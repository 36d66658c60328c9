// ApiError and the OpenAI error envelope.
#include "server/api_error.h"

#include <fmt/format.h>

namespace quatre::server {

ApiError::ApiError(int status, std::string message, std::string param, std::string code)
    : Error(std::move(message)), status_(status), param_(std::move(param)), code_(std::move(code)) {}

const char* ApiError::type() const {
  switch (status_) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    default: return status_ >= 500 ? "server_error" : "invalid_request_error";
  }
}

ApiError bad_field(std::string_view param, std::string_view problem) {
  return ApiError(400, fmt::format("{}: {}", param, problem), std::string(param));
}

ApiError from_invalid_request(const InvalidRequest& e) {
  const std::string_view m = e.what();
  const size_t colon = m.find(": ");
  std::string param;
  if (colon != std::string_view::npos && m.substr(0, colon).find(' ') == std::string_view::npos) param = m.substr(0, colon);
  return ApiError(400, std::string(m), param);
}

nlohmann::json error_body(const ApiError& e) {
  auto or_null = [](const std::string& s) { return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s); };
  return {{"error", {{"message", e.what()}, {"type", e.type()}, {"param", or_null(e.param())}, {"code", or_null(e.code())}}}};
}

}  // namespace quatre::server
