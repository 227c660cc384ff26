// The `naive` CUDA backend's row in the dispatch table: per-element kernels
// with materialized weights, every feature and dtype (float64 computes in
// double). The slowest CUDA backend, and the GPU oracle for the fast ones.
#include <string>

#include "../../src/backend.hpp"
#include "launch.hpp"

namespace nhood::detail {
namespace {
std::string naive_supports(const Params&, bool) { return {}; }
}  // namespace

BackendEntry naive_backend() {
  return {Backend::naive, DeviceKind::cuda, naive_supports, cuda::naive::forward, cuda::naive::backward};
}

}  // namespace nhood::detail
