// Backward kernels of the naive backend. With P (probabilities) and dP
// (= <d_out, v>) materialized per row and slot:
//   dS = P * (dP - delta),  delta = sum_slot P * dP
//   dq = scale * sum_slot dS * k
//   dk = scale * sum over the queries attending it of dS * q,  dv likewise with P * d_out
// dk/dv gather over each key's inverse window (and every query for the
// additional tokens) in a fixed order: deterministic, no atomics.
#pragma once

#include "../common/element.cuh"
#include "../common/launch.cuh"
#include "indexing.cuh"

namespace nhood::cuda::naive {

// In place: dP -> dS, one thread per row.
template <typename A>
__global__ void softmax_grad_kernel(Params p, const A* P, A* dS, int64_t slots) {
  const int64_t rows = p.batch * p.tokens() * p.heads;
  NHOOD_GRID_STRIDE(row, rows) {
    const A* pr = P + row * slots;
    A* r = dS + row * slots;
    A delta = 0;
    for (int64_t s = 0; s < slots; ++s)
      if (pr[s] != A(0)) delta += pr[s] * r[s];  // empty slots hold P = 0 and dP = -inf
    for (int64_t s = 0; s < slots; ++s) r[s] = pr[s] != A(0) ? pr[s] * (r[s] - delta) : A(0);
  }
}

// dq[row, d] = scale * sum_slot dS[row, slot] * k[key(slot), d].
template <typename T, typename A>
__global__ void query_grad_kernel(Params p, const A* dS, int64_t slots, int64_t capacity) {
  const int64_t rows = p.batch * p.tokens() * p.heads;
  const int64_t group = p.heads / p.heads_kv;
  const T* k = static_cast<const T*>(p.k.data);
  const T* ak = static_cast<const T*>(p.add_k.data);
  NHOOD_GRID_STRIDE(e, rows * p.head_dim) {
    const int64_t row = e / p.head_dim, d = e % p.head_dim;
    const Coord c = split_row(p, row, p.heads);
    const A* r = dS + row * slots;
    const Box box = window_box(p, c.x, c.y, c.z);
    Coord key{c.b, 0, 0, 0, c.h / group};
    A acc = 0;
    for (int64_t s = 0; s < box.size(); ++s) {
      box.at(s, key.x, key.y, key.z);
      acc += r[s] * A(load(k + offset(p.k, key) + d * p.k.sd));
    }
    for (int64_t n = 0; n < p.n_additional; ++n)
      acc += r[capacity + n] * A(load(ak + offset(p.add_k, c.b, n, key.h) + d * p.add_k.sd));
    store(static_cast<T*>(p.dq.data) + offset(p.dq, c) + d * p.dq.sd, acc * A(p.scale));
  }
}

// Adds query row `row`'s contribution through weight slot `slot` to the
// gradients of one key (dimension d of dk when d < head_dim, of dv when
// d < head_dim_v).
template <typename T, typename A>
__device__ __forceinline__ void add_query_term(const Params& p, const A* P, const A* dS, int64_t slots, int64_t row,
                                               const Coord& q, int64_t slot, int64_t d, A& dk, A& dv) {
  const int64_t i = row * slots + slot;
  if (d < p.head_dim) dk += dS[i] * A(load(static_cast<const T*>(p.q.data) + offset(p.q, q) + d * p.q.sd));
  if (d < p.head_dim_v)
    dv += P[i] * A(load(static_cast<const T*>(p.d_out.data) + offset(p.d_out, q) + d * p.d_out.sd));
}

// dk, dv of the window keys: one thread per (b, key token, kv head, d) with
// d < max(head_dim, head_dim_v), gathering over the key's inverse window.
template <typename T, typename A>
__global__ void key_grad_kernel(Params p, const A* P, const A* dS, int64_t slots) {
  const int64_t dims = p.head_dim > p.head_dim_v ? p.head_dim : p.head_dim_v;
  const int64_t keys = p.batch * p.tokens() * p.heads_kv;
  const int64_t group = p.heads / p.heads_kv;
  NHOOD_GRID_STRIDE(e, keys * dims) {
    const int64_t d = e % dims;
    const Coord c = split_row(p, e / dims, p.heads_kv);
    const Box inv = inverse_window_box(p, c.x, c.y, c.z);
    A dk = 0, dv = 0;
    Coord q{c.b, 0, 0, 0, 0};
    for (int64_t i = 0; i < inv.size(); ++i) {
      inv.at(i, q.x, q.y, q.z);
      const int64_t slot = window_box(p, q.x, q.y, q.z).index_of(c.x, c.y, c.z);
      for (q.h = c.h * group; q.h < (c.h + 1) * group; ++q.h)
        add_query_term<T>(p, P, dS, slots, row_of(p, q.b, q.x, q.y, q.z, q.h), q, slot, d, dk, dv);
    }
    if (d < p.head_dim) store(static_cast<T*>(p.dk.data) + offset(p.dk, c) + d * p.dk.sd, dk * A(p.scale));
    if (d < p.head_dim_v) store(static_cast<T*>(p.dv.data) + offset(p.dv, c) + d * p.dv.sd, dv);
  }
}

// dk, dv of the additional tokens: every query attends them, so one thread
// per (b, token, kv head, d) sums over all query tokens of its head group.
template <typename T, typename A>
__global__ void additional_grad_kernel(Params p, const A* P, const A* dS, int64_t slots, int64_t capacity) {
  const int64_t dims = p.head_dim > p.head_dim_v ? p.head_dim : p.head_dim_v;
  const int64_t group = p.heads / p.heads_kv;
  const int64_t tokens = p.tokens();
  NHOOD_GRID_STRIDE(e, p.batch * p.n_additional * p.heads_kv * dims) {
    const int64_t d = e % dims;
    const int64_t hk = (e / dims) % p.heads_kv;
    const int64_t n = (e / (dims * p.heads_kv)) % p.n_additional;
    const int64_t b = e / (dims * p.heads_kv * p.n_additional);
    A dk = 0, dv = 0;
    for (int64_t t = 0; t < tokens; ++t) {
      const int64_t row0 = (b * tokens + t) * p.heads;
      const Coord q0 = split_row(p, row0, p.heads);
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        Coord q = q0;
        q.h = h;
        add_query_term<T>(p, P, dS, slots, row0 + h, q, capacity + n, d, dk, dv);
      }
    }
    if (d < p.head_dim)
      store(static_cast<T*>(p.d_add_k.data) + offset(p.d_add_k, b, n, hk) + d * p.d_add_k.sd, dk * A(p.scale));
    if (d < p.head_dim_v)
      store(static_cast<T*>(p.d_add_v.data) + offset(p.d_add_v, b, n, hk) + d * p.d_add_v.sd, dv);
  }
}

}  // namespace nhood::cuda::naive
