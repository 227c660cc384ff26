// Backward pass of the naive backend. Recomputes P (as the reference does,
// rather than trusting a float32 lse), then dP -> dS, dq, dk/dv over inverse
// windows, and the additional tokens' grads. Two [rows, slots] workspaces.
#include <cuda_runtime_api.h>

#include "../common/check.cuh"
#include "../common/device_guard.cuh"
#include "../common/workspace.cuh"
#include "backward_kernels.cuh"
#include "forward_kernels.cuh"
#include "launch.hpp"

namespace nhood::cuda::naive {

template <typename T>
void backward_typed(const Params& p, cudaStream_t stream) {
  using A = typename Compute<T>::type;
  const int64_t rows = p.batch * p.tokens() * p.heads;
  const int64_t capacity = window_capacity(p);
  const int64_t slots = capacity + p.n_additional;
  const size_t bytes = size_t(rows * slots) * sizeof(A);
  Workspace probs(bytes, stream), grads(bytes, stream);
  A* P = probs.as<A>();
  A* dS = grads.as<A>();

  row_dot_kernel<T, A><<<grid_for(rows * slots), kThreads, 0, stream>>>(p, p.q, p.k, p.add_k, p.head_dim,
                                                                          A(p.scale), P, slots, capacity);
  NHOOD_CUDA_CHECK_LAUNCH("naive logits kernel");
  softmax_kernel<A><<<grid_for(rows), kThreads, 0, stream>>>(p, P, slots, detail::Operand{});
  NHOOD_CUDA_CHECK_LAUNCH("naive softmax kernel");
  row_dot_kernel<T, A><<<grid_for(rows * slots), kThreads, 0, stream>>>(p, p.d_out, p.v, p.add_v, p.head_dim_v,
                                                                          A(1), dS, slots, capacity);
  NHOOD_CUDA_CHECK_LAUNCH("naive dP kernel");
  softmax_grad_kernel<A><<<grid_for(rows), kThreads, 0, stream>>>(p, P, dS, slots);
  NHOOD_CUDA_CHECK_LAUNCH("naive softmax-grad kernel");
  query_grad_kernel<T, A><<<grid_for(rows * p.head_dim), kThreads, 0, stream>>>(p, dS, slots, capacity);
  NHOOD_CUDA_CHECK_LAUNCH("naive dq kernel");
  const int64_t dims = p.head_dim > p.head_dim_v ? p.head_dim : p.head_dim_v;
  const int64_t keys = p.batch * p.tokens() * p.heads_kv;
  key_grad_kernel<T, A><<<grid_for(keys * dims), kThreads, 0, stream>>>(p, P, dS, slots);
  NHOOD_CUDA_CHECK_LAUNCH("naive dk/dv kernel");
  if (p.n_additional > 0) {
    additional_grad_kernel<T, A><<<grid_for(p.batch * p.n_additional * p.heads_kv * dims), kThreads, 0, stream>>>(
        p, P, dS, slots, capacity);
    NHOOD_CUDA_CHECK_LAUNCH("naive additional-token grad kernel");
  }
}

void backward(const Params& p, void* stream) {
  DeviceGuard guard(p.device.index);
  visit_dtype(p.dtype, [&](auto tag) { backward_typed<decltype(tag)>(p, static_cast<cudaStream_t>(stream)); });
}

}  // namespace nhood::cuda::naive
