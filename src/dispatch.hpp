#pragma once

#include <vector>

#include "backend.hpp"

namespace nhood::detail {

// Every backend compiled into this build, fastest first within a device.
const std::vector<BackendEntry>& backend_table();

// The entry to run: `requested` if it exists, runs on the tensors' device and
// supports the problem (else nhood::Error saying which rule failed), or for
// Backend::automatic the first supporting entry of the table.
const BackendEntry& choose_backend(Backend requested, const Params& params, bool backward);

}  // namespace nhood::detail
