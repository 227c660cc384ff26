// Weight columns of the unfused ops on the device: the key at window slots
// (i0, i1, i2) is column (i0*K1 + i1)*K2 + i2 (nhood/unfused.hpp). Windows
// come from nhood/window.hpp through the naive backend's indexing helpers.
#pragma once

#include <cstdint>

#include "../naive/indexing.cuh"
#include "nhood/detail/unfused_params.hpp"

namespace nhood::cuda::unfused {

using naive::Box;
using naive::Coord;
using naive::offset;

// Column of key (x, y, z) for a query with window `w`, or -1 if outside it.
__host__ __device__ __forceinline__ int64_t column_of(const detail::Params& p, const Box& w, int64_t x, int64_t y,
                                                      int64_t z) {
  const int64_t key[3] = {x, y, z};
  int64_t c = 0;
  for (int a = 0; a < 3; ++a) {
    const int64_t d = key[a] - w.a[a].first;
    if (d < 0 || d % w.a[a].step) return -1;
    const int64_t slot = d / w.a[a].step;
    if (slot >= w.a[a].count) return -1;
    c = c * p.axis[a].kernel + slot;
  }
  return c;
}

// Splits a window column into slots; false if the query's window has no key there.
__host__ __device__ __forceinline__ bool key_of(const detail::Params& p, const Box& w, int64_t c, int64_t& x,
                                                int64_t& y, int64_t& z) {
  const int64_t s2 = c % p.axis[2].kernel;
  c /= p.axis[2].kernel;
  const int64_t s1 = c % p.axis[1].kernel;
  const int64_t s0 = c / p.axis[1].kernel;
  if (s0 >= w.a[0].count || s1 >= w.a[1].count || s2 >= w.a[2].count) return false;
  x = w.a[0].first + s0 * w.a[0].step;
  y = w.a[1].first + s1 * w.a[1].step;
  z = w.a[2].first + s2 * w.a[2].step;
  return true;
}

__host__ __device__ __forceinline__ int64_t bias_offset(const detail::Params& p, const detail::BiasOperand& b,
                                                        const Coord& q, int64_t x, int64_t y, int64_t z) {
  return q.h * b.sh + detail::bias_index(p.axis[0], q.x, x) * b.sx + detail::bias_index(p.axis[1], q.y, y) * b.sy +
         detail::bias_index(p.axis[2], q.z, z) * b.sz;
}

}  // namespace nhood::cuda::unfused
