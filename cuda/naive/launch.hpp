// Host entry points of the naive backend, one per pass (forward.cu,
// backward.cu); backend.cu wires them into the dispatch table.
#pragma once

#include "nhood/detail/params.hpp"

namespace nhood::cuda::naive {

void forward(const detail::Params& p, void* stream);
void backward(const detail::Params& p, void* stream);

}  // namespace nhood::cuda::naive
