// ApiError: a request that fails with an HTTP status and an OpenAI-style error object (PROTOCOL §4.7):
// {"error": {"message", "type", "param", "code"}}. Depends on core/error and nlohmann::json.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace quatre::server {

class ApiError : public Error {
 public:
  ApiError(int status, std::string message, std::string param = {}, std::string code = {});
  int status() const { return status_; }
  const std::string& param() const { return param_; }  // "" -> null
  const std::string& code() const { return code_; }    // "" -> null
  const char* type() const;  // from the status: invalid_request_error, authentication_error, ...

 private:
  int status_;
  std::string param_;
  std::string code_;
};

// 400 naming the field: "`param`: `problem`".
ApiError bad_field(std::string_view param, std::string_view problem);

// An InvalidRequest of a lower layer as a 400; its param is the leading "field.path: " of the message, if any.
ApiError from_invalid_request(const InvalidRequest& e);

nlohmann::json error_body(const ApiError& e);

}  // namespace quatre::server
