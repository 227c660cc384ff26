// Small helpers that render values for error messages.
#pragma once

#include <cstdint>
#include <sstream>
#include <string>

#include "nhood/error.hpp"
#include "nhood/types.hpp"

namespace nhood::detail {

inline std::string shape_string(const TensorView& t) {
  std::ostringstream s;
  s << '(';
  for (int i = 0; i < t.ndim; ++i) s << (i ? ", " : "") << t.shape[i];
  if (t.ndim == 1) s << ',';
  s << ')';
  return s.str();
}

inline std::string device_string(Device d) {
  return d.kind == DeviceKind::cpu ? std::string("cpu") : "cuda:" + std::to_string(d.index);
}

template <typename... Parts>
[[noreturn]] void fail(ErrorKind kind, const Parts&... parts) {
  std::ostringstream s;
  (s << ... << parts);
  throw Error(kind, s.str());
}

}  // namespace nhood::detail
