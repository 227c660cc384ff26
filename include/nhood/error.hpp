// The one exception type of nhood. Messages name the argument, the rule it
// breaks and the value that broke it; `kind` lets bindings map errors onto
// their language's categories (ValueError / TypeError / RuntimeError).
#pragma once

#include <stdexcept>
#include <string>

namespace nhood {

enum class ErrorKind : int { value, type, runtime };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

}  // namespace nhood
