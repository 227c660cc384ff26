// Launch template of the hopper forward, instantiated per (dtype, head dim)
// in inst_*.cu so the kernels compile in parallel, once each.
#pragma once

#include <cuda_runtime.h>

#include "../common/check.cuh"
#include "forward.cuh"

namespace nhood::hopper {

template <class T, int HD>
void launch_forward(const FwdArgs& args, int grid, cudaStream_t stream) {
  constexpr int smem = FwdShape<HD>::kSmemBytes;
  auto kernel = forward_kernel<T, HD>;
  NHOOD_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  kernel<<<grid, kThreads, smem, stream>>>(args);
  NHOOD_CUDA_CHECK_LAUNCH("hopper forward");
}

#define NHOOD_HOPPER_INSTANTIATE(T, HD) template void launch_forward<T, HD>(const FwdArgs&, int, cudaStream_t);

}  // namespace nhood::hopper
