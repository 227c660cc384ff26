// Entry points of the `cpu` backend (fused_forward.cpp, fused_backward.cpp);
// the dispatch row is made in fused_backend.cpp.
#pragma once

#include "grid.hpp"

namespace nhood::cpu::fused {
void forward(const Params& params, void* stream);
void backward(const Params& params, void* stream);
}  // namespace nhood::cpu::fused
