// Picks the row of a backend table that runs a problem, for any table whose
// rows have `id`, `device` and `unsupported_reason(params, backward)` (the
// fused table in dispatch.cpp, the unfused table in src/unfused/dispatch.cpp).
#pragma once

#include <string>
#include <vector>

#include "format.hpp"
#include "nhood/detail/params.hpp"

namespace nhood::detail {

// `requested` if it exists, runs on the tensors' device and supports the
// problem (else nhood::Error saying which rule failed), or for
// Backend::automatic the first supporting row. `pass` names the operation in
// messages ("forward", "qk backward", ...).
template <typename Entry>
const Entry& choose_entry(const std::vector<Entry>& table, Backend requested, const Params& params, bool backward,
                          const char* pass) {
  std::string reasons;
  for (const Entry& entry : table) {
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
