// Validates the tensors of the unfused ops against their Problem and lowers
// them to QKParams / AVParams.
#pragma once

#include "nhood/api.hpp"
#include "nhood/detail/unfused_params.hpp"
#include "nhood/unfused.hpp"

namespace nhood::detail {

QKParams qk_forward_params(const Problem& problem, const QKTensors& tensors, const Options& options);
QKParams qk_backward_params(const Problem& problem, const QKBackwardTensors& tensors, const Options& options);
AVParams av_forward_params(const Problem& problem, const AVTensors& tensors, const Options& options);
AVParams av_backward_params(const Problem& problem, const AVBackwardTensors& tensors, const Options& options);

}  // namespace nhood::detail
