// Launch templates of the hopper kernels, instantiated per (dtype, head dim)
// in inst_*.cu so the kernels compile in parallel, once each.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>

#include "../common/check.cuh"
#include "../fused/geometry.hpp"
#include "backward.cuh"
#include "dq_accum.cuh"
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

template <class T, int HD, bool KeyMajor, bool FuseDq = false>
void launch_backward(const BwdArgs& args, int grid, cudaStream_t stream) {
  constexpr int smem = BwdShape<HD, KeyMajor, FuseDq>::kSmemBytes;
  auto kernel = backward_kernel<T, HD, KeyMajor, FuseDq>;
  NHOOD_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  kernel<<<grid, kBwdThreads, smem, stream>>>(args);
  NHOOD_CUDA_CHECK_LAUNCH("hopper backward");
}

template <class T>
void launch_stats(const Params& p, float2* stats, cudaStream_t stream) {
  const int64_t rows = p.batch * p.tokens() * p.heads;
  const int64_t blocks = (rows * kStatLanes + 255) / 256;
  const bool vec = fused::vec_ok(p.out) && fused::vec_ok(p.d_out) && p.head_dim_v % 8 == 0;
  const unsigned grid = unsigned(blocks < 65536 ? blocks : 65536);
  if (rows < (int64_t(1) << 31) - int64_t(grid) * (256 / kStatLanes))  // no overflow in the grid-stride step either
    stats_kernel<T, int32_t><<<grid, 256, 0, stream>>>(p, stats, vec);
  else
    stats_kernel<T, int64_t><<<grid, 256, 0, stream>>>(p, stats, vec);
  NHOOD_CUDA_CHECK_LAUNCH("hopper backward statistics");
}

template <class T>
void launch_dq_from_accum(const Params& p, const float* acc, cudaStream_t stream) {
  const bool vec = fused::vec_ok(p.dq);
  const int64_t groups = p.batch * p.tokens() * p.heads * (p.head_dim / (vec ? 8 : 2));
  const unsigned grid = unsigned(std::min<int64_t>((groups + 255) / 256, 65536));
  if (groups < (int64_t(1) << 31) - int64_t(grid) * 256)  // no overflow in the grid-stride step either
    dq_from_accum_kernel<T, int32_t><<<grid, 256, 0, stream>>>(p, acc, vec);
  else
    dq_from_accum_kernel<T, int64_t><<<grid, 256, 0, stream>>>(p, acc, vec);
  NHOOD_CUDA_CHECK_LAUNCH("hopper backward dq from its accumulator");
}

#define NHOOD_HOPPER_INSTANTIATE(T, HD)                                               \
  template void launch_forward<T, HD>(const FwdArgs&, int, cudaStream_t);             \
  template void launch_backward<T, HD, false>(const BwdArgs&, int, cudaStream_t);     \
  template void launch_backward<T, HD, true>(const BwdArgs&, int, cudaStream_t);          \
  template void launch_backward<T, HD, true, true>(const BwdArgs&, int, cudaStream_t);

}  // namespace nhood::hopper
