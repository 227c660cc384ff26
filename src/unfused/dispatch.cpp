// Entry points of the unfused ops and their backend table: validate, lower,
// choose (the same rule as the fused table, src/choose_backend.hpp), run.
#include "../choose_backend.hpp"
#include "backend.hpp"
#include "params.hpp"

namespace nhood::detail {

UnfusedBackendEntry unfused_reference_backend();  // src/cpu/unfused_reference.cpp
#ifdef NHOOD_WITH_UNFUSED_CUDA
UnfusedBackendEntry unfused_gemm_backend();   // cuda/gemm/
UnfusedBackendEntry unfused_naive_backend();  // cuda/naive/unfused_*.cu
#endif

const std::vector<UnfusedBackendEntry>& unfused_backend_table() {
  static const std::vector<UnfusedBackendEntry> table = {
#ifdef NHOOD_WITH_UNFUSED_CUDA
      unfused_gemm_backend(),
      unfused_naive_backend(),
#endif
      unfused_reference_backend(),
  };
  return table;
}

}  // namespace nhood::detail

namespace nhood {

namespace {
using detail::choose_entry;
using detail::unfused_backend_table;
}  // namespace

void qk_forward(const Problem& problem, const QKTensors& tensors, const Options& options) {
  const detail::QKParams p = detail::qk_forward_params(problem, tensors, options);
  const auto& entry = choose_entry(unfused_backend_table(), options.backend, p.shape, false, "qk forward");
  if (p.shape.batch > 0) entry.qk_forward(p, options.stream);
}

void qk_backward(const Problem& problem, const QKBackwardTensors& tensors, const Options& options) {
  const detail::QKParams p = detail::qk_backward_params(problem, tensors, options);
  const auto& entry = choose_entry(unfused_backend_table(), options.backend, p.shape, true, "qk backward");
  entry.qk_backward(p, options.stream);  // runs with batch 0 too: d_rpb must be zeroed
}

void av_forward(const Problem& problem, const AVTensors& tensors, const Options& options) {
  const detail::AVParams p = detail::av_forward_params(problem, tensors, options);
  const auto& entry = choose_entry(unfused_backend_table(), options.backend, p.shape, false, "av forward");
  if (p.shape.batch > 0) entry.av_forward(p, options.stream);
}

void av_backward(const Problem& problem, const AVBackwardTensors& tensors, const Options& options) {
  const detail::AVParams p = detail::av_backward_params(problem, tensors, options);
  const auto& entry = choose_entry(unfused_backend_table(), options.backend, p.shape, true, "av backward");
  if (p.shape.batch > 0) entry.av_backward(p, options.stream);
}

}  // namespace nhood
