// Naive CUDA kernels of the unfused QK op and its backward: one thread per
// output element, float (double for float64) accumulation, no atomics.
#include <cuda_runtime_api.h>

#include <cmath>

#include "../common/check.cuh"
#include "../common/device_guard.cuh"
#include "../common/element.cuh"
#include "../common/launch.cuh"
#include "../gemm/columns.cuh"
#include "../gemm/unfused.hpp"

namespace nhood::cuda::unfused {
namespace {

using detail::Params;
using detail::QKParams;

// weights[row, c] for c in [0, n_window + n_additional).
template <typename T, typename A>
__global__ void qk_forward_kernel(QKParams qp) {
  const Params& p = qp.shape;
  const int64_t cols = qp.n_window + p.n_additional;
  const int64_t group = p.heads / p.heads_kv;
  NHOOD_GRID_STRIDE(i, p.batch * p.tokens() * p.heads * cols) {
    const int64_t c = i % cols;
    const Coord r = naive::split_row(p, i / cols, p.heads);
    const int64_t hk = r.h / group;
    const T* q = static_cast<const T*>(qp.query.data) + offset(qp.query, r);
    A s;
    if (c < qp.n_window) {
      int64_t x, y, z;
      if (!key_of(p, naive::window_box(p, r.x, r.y, r.z), c, x, y, z)) {
        s = -INFINITY;
      } else {
        const T* k = static_cast<const T*>(qp.key.data) + offset(qp.key, Coord{r.b, x, y, z, hk});
        s = 0;
        for (int64_t d = 0; d < p.head_dim; ++d) s += A(load(q + d * qp.query.sd)) * A(load(k + d * qp.key.sd));
        if (qp.rpb.data) s += A(load(static_cast<const T*>(qp.rpb.data) + bias_offset(p, qp.rpb, r, x, y, z)));
      }
    } else {
      const T* k = static_cast<const T*>(qp.add_k.data) + offset(qp.add_k, r.b, c - qp.n_window, hk);
      s = 0;
      for (int64_t d = 0; d < p.head_dim; ++d) s += A(load(q + d * qp.query.sd)) * A(load(k + d * qp.add_k.sd));
    }
    store(static_cast<T*>(qp.weights.data) + offset(qp.weights, r) + c * qp.weights.sd, s);
  }
}

template <typename T>
__device__ __forceinline__ auto d_weight(const QKParams& qp, const Coord& r, int64_t c) {
  return load(static_cast<const T*>(qp.d_weights.data) + offset(qp.d_weights, r) + c * qp.d_weights.sd);
}

// d_query[row, d] = sum_c dW[row, c] * key_c[d].
template <typename T, typename A>
__global__ void qk_d_query_kernel(QKParams qp) {
  const Params& p = qp.shape;
  const int64_t group = p.heads / p.heads_kv;
  NHOOD_GRID_STRIDE(i, p.batch * p.tokens() * p.heads * p.head_dim) {
    const int64_t d = i % p.head_dim;
    const Coord r = naive::split_row(p, i / p.head_dim, p.heads);
    const int64_t hk = r.h / group;
    const Box w = naive::window_box(p, r.x, r.y, r.z);
    A acc = 0;
    for (int64_t j = 0; j < w.size(); ++j) {
      int64_t x, y, z;
      w.at(j, x, y, z);
      const A g = A(d_weight<T>(qp, r, column_of(p, w, x, y, z)));
      acc += g * A(load(static_cast<const T*>(qp.key.data) + offset(qp.key, Coord{r.b, x, y, z, hk}) + d * qp.key.sd));
    }
    for (int64_t a = 0; a < p.n_additional; ++a)
      acc += A(d_weight<T>(qp, r, qp.n_window + a)) *
             A(load(static_cast<const T*>(qp.add_k.data) + offset(qp.add_k, r.b, a, hk) + d * qp.add_k.sd));
    store(static_cast<T*>(qp.d_query.data) + offset(qp.d_query, r) + d * qp.d_query.sd, acc);
  }
}

// d_key[kv row, d] = sum over queries attending the key (and group heads) of dW * query[d].
template <typename T, typename A>
__global__ void qk_d_key_kernel(QKParams qp) {
  const Params& p = qp.shape;
  const int64_t group = p.heads / p.heads_kv;
  NHOOD_GRID_STRIDE(i, p.batch * p.tokens() * p.heads_kv * p.head_dim) {
    const int64_t d = i % p.head_dim;
    const Coord r = naive::split_row(p, i / p.head_dim, p.heads_kv);
    const Box inv = naive::inverse_window_box(p, r.x, r.y, r.z);
    A acc = 0;
    for (int64_t j = 0; j < inv.size(); ++j) {
      int64_t x, y, z;
      inv.at(j, x, y, z);
      const int64_t c = column_of(p, naive::window_box(p, x, y, z), r.x, r.y, r.z);
      for (int64_t h = r.h * group; h < (r.h + 1) * group; ++h) {
        const Coord q{r.b, x, y, z, h};
        acc += A(d_weight<T>(qp, q, c)) *
               A(load(static_cast<const T*>(qp.query.data) + offset(qp.query, q) + d * qp.query.sd));
      }
    }
    store(static_cast<T*>(qp.d_key.data) + offset(qp.d_key, r) + d * qp.d_key.sd, acc);
  }
}

template <typename T, typename A>
__global__ void qk_d_additional_kernel(QKParams qp) {
  const Params& p = qp.shape;
  const int64_t group = p.heads / p.heads_kv;
  NHOOD_GRID_STRIDE(i, p.batch * p.n_additional * p.heads_kv * p.head_dim) {
    const int64_t d = i % p.head_dim;
    const int64_t hk = (i / p.head_dim) % p.heads_kv;
    const int64_t a = (i / (p.head_dim * p.heads_kv)) % p.n_additional;
    const int64_t b = i / (p.head_dim * p.heads_kv * p.n_additional);
    A acc = 0;
    for (int64_t t = 0; t < p.tokens(); ++t)
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        const Coord q = naive::split_row(p, (b * p.tokens() + t) * p.heads + h, p.heads);
        acc += A(d_weight<T>(qp, q, qp.n_window + a)) *
               A(load(static_cast<const T*>(qp.query.data) + offset(qp.query, q) + d * qp.query.sd));
      }
    store(static_cast<T*>(qp.d_add_k.data) + offset(qp.d_add_k, b, a, hk) + d * qp.d_add_k.sd, acc);
  }
}

// d_rpb[h, e]: sum over batch and queries of dW at the column reading entry e.
template <typename T, typename A>
__global__ void qk_d_rpb_kernel(QKParams qp) {
  const Params& p = qp.shape;
  const int64_t n1 = 2 * p.axis[1].kernel - 1, n2 = 2 * p.axis[2].kernel - 1, n0 = 2 * p.axis[0].kernel - 1;
  NHOOD_GRID_STRIDE(i, p.heads * n0 * n1 * n2) {
    const int64_t e2 = i % n2, e1 = (i / n2) % n1, e0 = (i / (n1 * n2)) % n0, h = i / (n0 * n1 * n2);
    A acc = 0;
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t t = 0; t < p.tokens(); ++t) {
        const Coord q = naive::split_row(p, (b * p.tokens() + t) * p.heads + h, p.heads);
        const int64_t x = q.x + (e0 - (p.axis[0].kernel - 1)) * p.axis[0].dilation;
        const int64_t y = q.y + (e1 - (p.axis[1].kernel - 1)) * p.axis[1].dilation;
        const int64_t z = q.z + (e2 - (p.axis[2].kernel - 1)) * p.axis[2].dilation;
        const int64_t c = column_of(p, naive::window_box(p, q.x, q.y, q.z), x, y, z);
        if (c >= 0) acc += A(d_weight<T>(qp, q, c));
      }
    store(static_cast<T*>(qp.d_rpb.data) + h * qp.d_rpb.sh + e0 * qp.d_rpb.sx + e1 * qp.d_rpb.sy + e2 * qp.d_rpb.sz,
          acc);
  }
}

}  // namespace

void naive_qk_forward(const QKParams& qp, void* stream) {
  DeviceGuard guard(qp.shape.device.index);
  const auto s = static_cast<cudaStream_t>(stream);
  const Params& p = qp.shape;
  visit_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Compute<T>::type;
    qk_forward_kernel<T, A><<<grid_for(p.batch * p.tokens() * p.heads * (qp.n_window + p.n_additional)), kThreads, 0,
                              s>>>(qp);
    NHOOD_CUDA_CHECK_LAUNCH("unfused naive qk kernel");
  });
}

void naive_qk_backward(const QKParams& qp, void* stream) {
  DeviceGuard guard(qp.shape.device.index);
  const auto s = static_cast<cudaStream_t>(stream);
  const Params& p = qp.shape;
  visit_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Compute<T>::type;
    if (p.batch > 0) {
      qk_d_query_kernel<T, A><<<grid_for(p.batch * p.tokens() * p.heads * p.head_dim), kThreads, 0, s>>>(qp);
      NHOOD_CUDA_CHECK_LAUNCH("unfused naive d_query kernel");
      qk_d_key_kernel<T, A><<<grid_for(p.batch * p.tokens() * p.heads_kv * p.head_dim), kThreads, 0, s>>>(qp);
      NHOOD_CUDA_CHECK_LAUNCH("unfused naive d_key kernel");
      if (p.n_additional > 0) {
        qk_d_additional_kernel<T, A>
            <<<grid_for(p.batch * p.n_additional * p.heads_kv * p.head_dim), kThreads, 0, s>>>(qp);
        NHOOD_CUDA_CHECK_LAUNCH("unfused naive d_additional_keys kernel");
      }
    }
    if (qp.d_rpb.data) {
      const int64_t n = p.heads * (2 * p.axis[0].kernel - 1) * (2 * p.axis[1].kernel - 1) * (2 * p.axis[2].kernel - 1);
      qk_d_rpb_kernel<T, A><<<grid_for(n), kThreads, 0, s>>>(qp);
      NHOOD_CUDA_CHECK_LAUNCH("unfused naive d_rpb kernel");
    }
  });
}

}  // namespace nhood::cuda::unfused
