// Validates tensors against a Problem and lowers them to detail::Params.
#pragma once

#include "nhood/api.hpp"
#include "nhood/detail/params.hpp"

namespace nhood::detail {

// Problem-level fields only (no tensors): what dispatch needs to choose.
Params problem_params(const Problem& problem, DType dtype, Device device, bool deterministic);
Params forward_params(const Problem& problem, const ForwardTensors& tensors, const Options& options);
Params backward_params(const Problem& problem, const BackwardTensors& tensors, const Options& options);

}  // namespace nhood::detail
