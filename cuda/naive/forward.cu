// Forward pass of the naive backend: logits -> softmax (+ lse) -> weighted sum,
// through a [rows, slots] workspace of Compute<T> weights on the caller's stream.
#include <cuda_runtime_api.h>

#include "../common/check.cuh"
#include "../common/device_guard.cuh"
#include "../common/workspace.cuh"
#include "forward_kernels.cuh"
#include "launch.hpp"

namespace nhood::cuda::naive {

template <typename T>
void forward_typed(const Params& p, cudaStream_t stream) {
  using A = typename Compute<T>::type;
  const int64_t rows = p.batch * p.tokens() * p.heads;
  const int64_t capacity = window_capacity(p);
  const int64_t slots = capacity + p.n_additional;
  Workspace weights(size_t(rows * slots) * sizeof(A), stream);
  A* w = weights.as<A>();

  row_dot_kernel<T, A><<<grid_for(rows * slots), kThreads, 0, stream>>>(p, p.q, p.k, p.add_k, p.head_dim,
                                                                          A(p.scale), w, slots, capacity);
  NHOOD_CUDA_CHECK_LAUNCH("naive logits kernel");
  softmax_kernel<A><<<grid_for(rows), kThreads, 0, stream>>>(p, w, slots, p.lse);
  NHOOD_CUDA_CHECK_LAUNCH("naive softmax kernel");
  weighted_sum_kernel<T, A><<<grid_for(rows * p.head_dim_v), kThreads, 0, stream>>>(p, w, slots, capacity);
  NHOOD_CUDA_CHECK_LAUNCH("naive weighted-sum kernel");
}

void forward(const Params& p, void* stream) {
  DeviceGuard guard(p.device.index);
  visit_dtype(p.dtype, [&](auto tag) { forward_typed<decltype(tag)>(p, static_cast<cudaStream_t>(stream)); });
}

}  // namespace nhood::cuda::naive
