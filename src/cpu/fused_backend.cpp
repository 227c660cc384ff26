// The dispatch row of the `cpu` backend. float64 is left to `reference`
// (which computes in float64 anyway): this backend computes in float32, and
// automatic dispatch then falls through to the next row for float64 inputs.
#include "../backend.hpp"
#include "fused_backend.hpp"

namespace nhood::cpu::fused {
namespace {
std::string unsupported_reason(const Params& p, bool) {
  if (p.dtype == DType::float64) return "float64 is computed by the reference backend (cpu computes in float32)";
  return {};
}
}  // namespace
}  // namespace nhood::cpu::fused

namespace nhood::detail {
BackendEntry cpu_backend() {
  return {Backend::cpu, DeviceKind::cpu, cpu::fused::unsupported_reason, cpu::fused::forward,
          cpu::fused::backward};
}
}  // namespace nhood::detail
