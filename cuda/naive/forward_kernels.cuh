// Forward kernels of the naive backend: logits, softmax (+ lse), weighted sum.
// One thread per output element, grid-stride loops, 64-bit indices.
#pragma once

#include <cmath>

#include "../common/element.cuh"
#include "../common/launch.cuh"
#include "indexing.cuh"

namespace nhood::cuda::naive {

// Sentinel for slots beyond a row's window; exp() of it is exactly 0.
template <typename A>
__device__ __forceinline__ A empty_slot() { return -INFINITY; }

// w[row, slot] = <a[row], b[key(slot)]> * scale: the logits (a = q, b = k,
// dim = head_dim) or, in backward, dP (a = d_out, b = v, dim = head_dim_v).
template <typename T, typename A>
__global__ void row_dot_kernel(Params p, Operand a, Operand b, TokenOperand b_add, int64_t dim, A scale, A* w,
                               int64_t slots, int64_t capacity) {
  const int64_t rows = p.batch * p.tokens() * p.heads;
  const int64_t group = p.heads / p.heads_kv;
  NHOOD_GRID_STRIDE(e, rows * slots) {
    const int64_t row = e / slots, slot = e % slots;
    const Coord c = split_row(p, row, p.heads);
    const T* bp;
    int64_t bbase, bsd;
    if (slot < capacity) {
      const Box box = window_box(p, c.x, c.y, c.z);
      if (slot >= box.size()) {
        w[e] = empty_slot<A>();
        continue;
      }
      Coord k{c.b, 0, 0, 0, c.h / group};
      box.at(slot, k.x, k.y, k.z);
      bp = static_cast<const T*>(b.data);
      bbase = offset(b, k);
      bsd = b.sd;
    } else {
      bp = static_cast<const T*>(b_add.data);
      bbase = offset(b_add, c.b, slot - capacity, c.h / group);
      bsd = b_add.sd;
    }
    const T* ap = static_cast<const T*>(a.data) + offset(a, c);
    A s = 0;
    for (int64_t d = 0; d < dim; ++d) s += A(load(ap + d * a.sd)) * A(load(bp + bbase + d * bsd));
    w[e] = s * scale;
  }
}

// In place: logits -> probabilities, one thread per row; writes lse (float32)
// when `lse` has data. NaN logits propagate into the row, as in the reference.
template <typename A>
__global__ void softmax_kernel(Params p, A* w, int64_t slots, Operand lse) {
  const int64_t rows = p.batch * p.tokens() * p.heads;
  NHOOD_GRID_STRIDE(row, rows) {
    A* r = w + row * slots;
    A m = -INFINITY;
    for (int64_t s = 0; s < slots; ++s) m = (r[s] > m || isnan(r[s])) ? r[s] : m;
    A sum = 0;
    for (int64_t s = 0; s < slots; ++s) sum += exp(r[s] - m);
    const A inv = A(1) / sum;
    for (int64_t s = 0; s < slots; ++s) r[s] = exp(r[s] - m) * inv;
    if (lse.data) static_cast<float*>(lse.data)[offset(lse, split_row(p, row, p.heads))] = float(m + log(sum));
  }
}

// out[row, d] = sum_slot P[row, slot] * v[key(slot), d].
template <typename T, typename A>
__global__ void weighted_sum_kernel(Params p, const A* P, int64_t slots, int64_t capacity) {
  const int64_t rows = p.batch * p.tokens() * p.heads;
  const int64_t group = p.heads / p.heads_kv;
  const T* v = static_cast<const T*>(p.v.data);
  const T* av = static_cast<const T*>(p.add_v.data);
  NHOOD_GRID_STRIDE(e, rows * p.head_dim_v) {
    const int64_t row = e / p.head_dim_v, d = e % p.head_dim_v;
    const Coord c = split_row(p, row, p.heads);
    const A* pr = P + row * slots;
    const Box box = window_box(p, c.x, c.y, c.z);
    Coord k{c.b, 0, 0, 0, c.h / group};
    A acc = 0;
    for (int64_t s = 0; s < box.size(); ++s) {
      box.at(s, k.x, k.y, k.z);
      acc += pr[s] * A(load(v + offset(p.v, k) + d * p.v.sd));
    }
    for (int64_t n = 0; n < p.n_additional; ++n)
      acc += pr[capacity + n] * A(load(av + offset(p.add_v, c.b, n, k.h) + d * p.add_v.sd));
    store(static_cast<T*>(p.out.data) + offset(p.out, c) + d * p.out.sd, acc);
  }
}

}  // namespace nhood::cuda::naive
