// Host entry points of the unfused QK/AV ops on CUDA: the naive kernels
// (cuda/naive/unfused_*.cu) and the tensor-core `gemm` kernels (cuda/gemm/).
// cuda/gemm/backend.cpp wires them into the unfused dispatch table.
#pragma once

#include "nhood/detail/unfused_params.hpp"

namespace nhood::cuda::unfused {

void naive_qk_forward(const detail::QKParams& p, void* stream);
void naive_qk_backward(const detail::QKParams& p, void* stream);
void naive_av_forward(const detail::AVParams& p, void* stream);
void naive_av_backward(const detail::AVParams& p, void* stream);

// Tensor-core forward kernels: fp16/bf16, head_dim % 16 == 0 and <= 128.
bool gemm_supports(const detail::Params& shape);
void gemm_qk_forward(const detail::QKParams& p, void* stream);
void gemm_av_forward(const detail::AVParams& p, void* stream);

}  // namespace nhood::cuda::unfused
