// The three kinds of error of the project (STYLE.md (d)): bad input, environment/load failure, broken invariant.
// Depends on the standard library only.
#pragma once

#include <stdexcept>
#include <string>

namespace quatre {

// Base of every error a caller may catch and show to a person.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Bad input from a user or a client (a request, a CLI argument). The server maps it to a 4xx.
class InvalidRequest : public Error {
 public:
  using Error::Error;
};

// A file, checkpoint or configuration that cannot be loaded as it is.
class LoadError : public Error {
 public:
  using Error::Error;
};

// A CUDA runtime or library call that failed.
class CudaError : public Error {
 public:
  using Error::Error;
};

}  // namespace quatre
