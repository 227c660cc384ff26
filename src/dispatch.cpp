// The one dispatch table of nhood. A backend joins by adding one row here.
#include "dispatch.hpp"

#include <string>

#include "format.hpp"

namespace nhood::detail {

BackendEntry reference_backend();  // src/cpu/reference.cpp
#ifdef NHOOD_WITH_CUDA
BackendEntry naive_backend();  // cuda/naive/
#endif

const std::vector<BackendEntry>& backend_table() {
  static const std::vector<BackendEntry> table = {
#ifdef NHOOD_WITH_CUDA
      naive_backend(),
#endif
      reference_backend(),
  };
  return table;
}

const BackendEntry& choose_backend(Backend requested, const Params& params, bool backward) {
  const char* pass = backward ? "backward" : "forward";
  std::string reasons;
  for (const BackendEntry& entry : backend_table()) {
    if (requested != Backend::automatic && entry.id != requested) continue;
    if (entry.device != params.device.kind) {
      if (requested != Backend::automatic)
        fail(ErrorKind::value, "backend '", backend_name(requested), "' runs on ",
             entry.device == DeviceKind::cpu ? "cpu" : "cuda", " but the tensors are on ",
             device_string(params.device));
      continue;
    }
    const std::string why = entry.unsupported_reason(params, backward);
    if (why.empty()) return entry;
    if (requested != Backend::automatic)
      fail(ErrorKind::value, "backend '", backend_name(requested), "' does not support this ", pass,
           " problem: ", why);
    reasons += std::string("\n  ") + backend_name(entry.id) + ": " + why;
  }
  if (requested != Backend::automatic)
    fail(ErrorKind::value, "backend '", backend_name(requested), "' is not available in this build",
         requested == Backend::reference || requested == Backend::cpu ? "" : " (was it built with CUDA?)");
  fail(ErrorKind::value, "no backend supports this ", pass, " problem on ", device_string(params.device), reasons);
}

}  // namespace nhood::detail
