// Launch templates of the fused backend, instantiated per (dtype, head-dim
// bucket) in small .cu files (inst_*.cu) so builds stay parallel and small.
#pragma once

#include <cuda_runtime.h>

#include "../common/check.cuh"
#include "backward.cuh"
#include "dq.cuh"
#include "small.cuh"

namespace nhood::fused {

template <class K>
void raise_smem(K kernel, int bytes) {
  NHOOD_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

inline dim3 grid_of(const Params& p, const Geo& geo, int extra_blocks, int64_t heads) {
  return dim3(unsigned(geo.n_spatial_blocks + extra_blocks), unsigned(heads), unsigned(p.batch));
}

template <class T, int HD, int MI>
void launch_forward(const Params& p, const Geo& geo, cudaStream_t stream) {
  constexpr int BK = fwd_bk<HD>();
  constexpr int smem = fwd_smem_bytes<T, HD, BK, MI>();
  auto kernel = forward_kernel<T, HD, BK, MI>;
  raise_smem(kernel, smem);
  kernel<<<grid_of(p, geo, 0, p.heads), kThreads, smem, stream>>>(p, geo);
  NHOOD_CUDA_CHECK_LAUNCH("fused forward");
}

template <class T, int HD>
void launch_small_forward(const Params& p, const Geo& geo, cudaStream_t stream) {
  constexpr int smem = small_smem_bytes<T, HD>();
  auto kernel = small_forward_kernel<T, HD>;
  raise_smem(kernel, smem);
  kernel<<<grid_of(p, geo, 0, p.heads), kThreads, smem, stream>>>(p, geo);
  NHOOD_CUDA_CHECK_LAUNCH("fused small-window forward");
}

template <class T, int HD>
void launch_delta(const Params& p, float* delta, cudaStream_t stream) {
  const int64_t rows = p.batch * p.tokens() * p.heads;
  const int64_t blocks = (rows * 32 + 255) / 256;
  delta_kernel<T><<<unsigned(blocks < 65536 ? blocks : 65536), 256, 0, stream>>>(p, delta);
  NHOOD_CUDA_CHECK_LAUNCH("fused delta");
}

template <class T, int HD>
void launch_dq(const Params& p, const Geo& geo, cudaStream_t stream) {
  constexpr int BK = kv_tile<HD>();
  constexpr int smem = dq_smem_bytes<T, HD, BK>();
  auto kernel = dq_kernel<T, HD, BK>;
  raise_smem(kernel, smem);
  kernel<<<grid_of(p, geo, 0, p.heads), kThreads, smem, stream>>>(p, geo);
  NHOOD_CUDA_CHECK_LAUNCH("fused dq");
}

template <class T, int HD>
void launch_dkdv(const Params& p, const Geo& geo, cudaStream_t stream) {
  constexpr int smem = dkdv_smem_bytes<T, HD>();
  auto kernel = dkdv_kernel<T, HD>;
  raise_smem(kernel, smem);
  const int extra = int((p.n_additional + kRows - 1) / kRows);
  kernel<<<grid_of(p, geo, extra, p.heads_kv), kThreads, smem, stream>>>(p, geo);
  NHOOD_CUDA_CHECK_LAUNCH("fused dkdv");
}

// Backward launchers; each inst_*.cu names its forward (MI = fwd_mi<HD>()).
#define NHOOD_FUSED_INSTANTIATE(T, HD)                                                   \
  template void launch_delta<T, HD>(const Params&, float*, cudaStream_t);                \
  template void launch_dq<T, HD>(const Params&, const Geo&, cudaStream_t);               \
  template void launch_dkdv<T, HD>(const Params&, const Geo&, cudaStream_t);

}  // namespace nhood::fused
