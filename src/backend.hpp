// How a backend plugs into dispatch: one row of the table in dispatch.cpp.
#pragma once

#include <string>

#include "nhood/detail/params.hpp"
#include "nhood/types.hpp"

namespace nhood::detail {

struct BackendEntry {
  Backend id;
  DeviceKind device;
  // Empty string when the problem is supported; otherwise why not (shown to
  // users who ask for this backend explicitly).
  std::string (*unsupported_reason)(const Params& params, bool backward);
  void (*forward)(const Params& params, void* stream);
  void (*backward)(const Params& params, void* stream);
};

}  // namespace nhood::detail
