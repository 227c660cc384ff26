// The one dispatch table of nhood. A backend joins by adding one row here.
#include "dispatch.hpp"

#include "choose_backend.hpp"

namespace nhood::detail {

BackendEntry cpu_backend();        // src/cpu/fused_*.cpp
BackendEntry reference_backend();  // src/cpu/reference.cpp
#ifdef NHOOD_WITH_HOPPER
BackendEntry hopper_backend();  // cuda/hopper/ (sm_90a)
#endif
#ifdef NHOOD_WITH_CUDA
BackendEntry fused_backend();  // cuda/fused/
BackendEntry naive_backend();  // cuda/naive/
#endif

const std::vector<BackendEntry>& backend_table() {
  static const std::vector<BackendEntry> table = {
#ifdef NHOOD_WITH_HOPPER
      hopper_backend(),
#endif
#ifdef NHOOD_WITH_CUDA
      fused_backend(),
      naive_backend(),
#endif
      cpu_backend(),
      reference_backend(),
  };
  return table;
}

const BackendEntry& choose_backend(Backend requested, const Params& params, bool backward) {
  return choose_entry(backend_table(), requested, params, backward, backward ? "backward" : "forward");
}

}  // namespace nhood::detail
