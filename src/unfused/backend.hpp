// How a backend of the unfused QK/AV ops plugs in: one row of the table in
// src/unfused/dispatch.cpp (chosen by the same rule as the fused table).
#pragma once

#include <string>
#include <vector>

#include "nhood/detail/unfused_params.hpp"
#include "nhood/types.hpp"

namespace nhood::detail {

struct UnfusedBackendEntry {
  Backend id;
  DeviceKind device;
  // Empty when the problem (QKParams/AVParams::shape) is supported, else why not.
  std::string (*unsupported_reason)(const Params& shape, bool backward);
  void (*qk_forward)(const QKParams& params, void* stream);
  void (*qk_backward)(const QKParams& params, void* stream);
  void (*av_forward)(const AVParams& params, void* stream);
  void (*av_backward)(const AVParams& params, void* stream);
};

const std::vector<UnfusedBackendEntry>& unfused_backend_table();

}  // namespace nhood::detail
