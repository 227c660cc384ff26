// Naive CUDA kernels of the unfused AV op and its backward: one thread per
// output element, float (double for float64) accumulation, no atomics.
#include <cuda_runtime_api.h>

#include "../common/check.cuh"
#include "../common/device_guard.cuh"
#include "../common/element.cuh"
#include "../common/launch.cuh"
#include "../gemm/columns.cuh"
#include "../gemm/unfused.hpp"

namespace nhood::cuda::unfused {
namespace {

using detail::AVParams;
using detail::Params;

template <typename T>
__device__ __forceinline__ auto weight(const AVParams& ap, const Coord& r, int64_t c) {
  return load(static_cast<const T*>(ap.weights.data) + offset(ap.weights, r) + c * ap.weights.sd);
}

// out[row, d] = sum_c W[row, c] * value_c[d] (+ additional).
template <typename T, typename A>
__global__ void av_forward_kernel(AVParams ap) {
  const Params& p = ap.shape;
  const int64_t group = p.heads / p.heads_kv;
  NHOOD_GRID_STRIDE(i, p.batch * p.tokens() * p.heads * p.head_dim_v) {
    const int64_t d = i % p.head_dim_v;
    const Coord r = naive::split_row(p, i / p.head_dim_v, p.heads);
    const int64_t hk = r.h / group;
    const Box w = naive::window_box(p, r.x, r.y, r.z);
    A acc = 0;
    for (int64_t j = 0; j < w.size(); ++j) {
      int64_t x, y, z;
      w.at(j, x, y, z);
      acc += A(weight<T>(ap, r, column_of(p, w, x, y, z))) *
             A(load(static_cast<const T*>(ap.value.data) + offset(ap.value, Coord{r.b, x, y, z, hk}) + d * ap.value.sd));
    }
    for (int64_t a = 0; a < p.n_additional; ++a)
      acc += A(weight<T>(ap, r, ap.n_window + a)) *
             A(load(static_cast<const T*>(ap.add_v.data) + offset(ap.add_v, r.b, a, hk) + d * ap.add_v.sd));
    store(static_cast<T*>(ap.out.data) + offset(ap.out, r) + d * ap.out.sd, acc);
  }
}

// d_weights[row, c] = <d_out[row], value_c> (0 for unused columns).
template <typename T, typename A>
__global__ void av_d_weights_kernel(AVParams ap) {
  const Params& p = ap.shape;
  const int64_t cols = ap.n_window + p.n_additional;
  const int64_t group = p.heads / p.heads_kv;
  NHOOD_GRID_STRIDE(i, p.batch * p.tokens() * p.heads * cols) {
    const int64_t c = i % cols;
    const Coord r = naive::split_row(p, i / cols, p.heads);
    const int64_t hk = r.h / group;
    const T* g = static_cast<const T*>(ap.d_out.data) + offset(ap.d_out, r);
    const T* v = nullptr;
    int64_t sd = 0;
    if (c < ap.n_window) {
      int64_t x, y, z;
      if (key_of(p, naive::window_box(p, r.x, r.y, r.z), c, x, y, z)) {
        v = static_cast<const T*>(ap.value.data) + offset(ap.value, Coord{r.b, x, y, z, hk});
        sd = ap.value.sd;
      }
    } else {
      v = static_cast<const T*>(ap.add_v.data) + offset(ap.add_v, r.b, c - ap.n_window, hk);
      sd = ap.add_v.sd;
    }
    A acc = 0;
    if (v)
      for (int64_t d = 0; d < p.head_dim_v; ++d) acc += A(load(g + d * ap.d_out.sd)) * A(load(v + d * sd));
    store(static_cast<T*>(ap.d_weights.data) + offset(ap.d_weights, r) + c * ap.d_weights.sd, acc);
  }
}

// d_value[kv row, d] = sum over queries attending the key (and group heads) of W * d_out[d].
template <typename T, typename A>
__global__ void av_d_value_kernel(AVParams ap) {
  const Params& p = ap.shape;
  const int64_t group = p.heads / p.heads_kv;
  NHOOD_GRID_STRIDE(i, p.batch * p.tokens() * p.heads_kv * p.head_dim_v) {
    const int64_t d = i % p.head_dim_v;
    const Coord r = naive::split_row(p, i / p.head_dim_v, p.heads_kv);
    const Box inv = naive::inverse_window_box(p, r.x, r.y, r.z);
    A acc = 0;
    for (int64_t j = 0; j < inv.size(); ++j) {
      int64_t x, y, z;
      inv.at(j, x, y, z);
      const int64_t c = column_of(p, naive::window_box(p, x, y, z), r.x, r.y, r.z);
      for (int64_t h = r.h * group; h < (r.h + 1) * group; ++h) {
        const Coord q{r.b, x, y, z, h};
        acc += A(weight<T>(ap, q, c)) *
               A(load(static_cast<const T*>(ap.d_out.data) + offset(ap.d_out, q) + d * ap.d_out.sd));
      }
    }
    store(static_cast<T*>(ap.d_value.data) + offset(ap.d_value, r) + d * ap.d_value.sd, acc);
  }
}

template <typename T, typename A>
__global__ void av_d_additional_kernel(AVParams ap) {
  const Params& p = ap.shape;
  const int64_t group = p.heads / p.heads_kv;
  NHOOD_GRID_STRIDE(i, p.batch * p.n_additional * p.heads_kv * p.head_dim_v) {
    const int64_t d = i % p.head_dim_v;
    const int64_t hk = (i / p.head_dim_v) % p.heads_kv;
    const int64_t a = (i / (p.head_dim_v * p.heads_kv)) % p.n_additional;
    const int64_t b = i / (p.head_dim_v * p.heads_kv * p.n_additional);
    A acc = 0;
    for (int64_t t = 0; t < p.tokens(); ++t)
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        const Coord q = naive::split_row(p, (b * p.tokens() + t) * p.heads + h, p.heads);
        acc += A(weight<T>(ap, q, ap.n_window + a)) *
               A(load(static_cast<const T*>(ap.d_out.data) + offset(ap.d_out, q) + d * ap.d_out.sd));
      }
    store(static_cast<T*>(ap.d_add_v.data) + offset(ap.d_add_v, b, a, hk) + d * ap.d_add_v.sd, acc);
  }
}

}  // namespace

void naive_av_forward(const AVParams& ap, void* stream) {
  DeviceGuard guard(ap.shape.device.index);
  const auto s = static_cast<cudaStream_t>(stream);
  const Params& p = ap.shape;
  visit_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Compute<T>::type;
    av_forward_kernel<T, A><<<grid_for(p.batch * p.tokens() * p.heads * p.head_dim_v), kThreads, 0, s>>>(ap);
    NHOOD_CUDA_CHECK_LAUNCH("unfused naive av kernel");
  });
}

void naive_av_backward(const AVParams& ap, void* stream) {
  DeviceGuard guard(ap.shape.device.index);
  const auto s = static_cast<cudaStream_t>(stream);
  const Params& p = ap.shape;
  visit_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Compute<T>::type;
    av_d_weights_kernel<T, A>
        <<<grid_for(p.batch * p.tokens() * p.heads * (ap.n_window + p.n_additional)), kThreads, 0, s>>>(ap);
    NHOOD_CUDA_CHECK_LAUNCH("unfused naive d_weights kernel");
    av_d_value_kernel<T, A><<<grid_for(p.batch * p.tokens() * p.heads_kv * p.head_dim_v), kThreads, 0, s>>>(ap);
    NHOOD_CUDA_CHECK_LAUNCH("unfused naive d_value kernel");
    if (p.n_additional > 0) {
      av_d_additional_kernel<T, A>
          <<<grid_for(p.batch * p.n_additional * p.heads_kv * p.head_dim_v), kThreads, 0, s>>>(ap);
      NHOOD_CUDA_CHECK_LAUNCH("unfused naive d_additional_values kernel");
    }
  });
}

}  // namespace nhood::cuda::unfused
