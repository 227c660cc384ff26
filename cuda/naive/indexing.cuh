// Addressing for the naive kernels: rows, windows and weight slots.
//
// A "row" is one (batch, query token, head): row = (((b*X + x)*Y + y)*Z + z)*H + h.
// Each row owns `slots` = window_capacity + n_additional weights in the
// float workspace: the keys of its window box in x-y-z order (a row whose
// window is smaller than the capacity, e.g. causal, leaves the tail unused),
// then the additional tokens. The window itself comes from nhood/window.hpp.
#pragma once

#include <cstdint>

#include "nhood/detail/params.hpp"
#include "nhood/window.hpp"

namespace nhood::cuda::naive {

using detail::Operand;
using detail::Params;
using detail::TokenOperand;

struct Coord {
  int64_t b, x, y, z, h;
};

__host__ __device__ __forceinline__ int64_t offset(const Operand& o, const Coord& c) {
  return c.b * o.sb + c.x * o.sx + c.y * o.sy + c.z * o.sz + c.h * o.sh;
}
__host__ __device__ __forceinline__ int64_t offset(const TokenOperand& o, int64_t b, int64_t n, int64_t h) {
  return b * o.sb + n * o.sn + h * o.sh;
}

// Splits a flat index over [B, X, Y, Z, heads] (heads fastest).
__host__ __device__ __forceinline__ Coord split_row(const Params& p, int64_t row, int64_t heads) {
  Coord c;
  c.h = row % heads; row /= heads;
  c.z = row % p.axis[2].length; row /= p.axis[2].length;
  c.y = row % p.axis[1].length; row /= p.axis[1].length;
  c.x = row % p.axis[0].length;
  c.b = row / p.axis[0].length;
  return c;
}

__host__ __device__ __forceinline__ int64_t row_of(const Params& p, int64_t b, int64_t x, int64_t y, int64_t z,
                                                   int64_t h) {
  return (((b * p.axis[0].length + x) * p.axis[1].length + y) * p.axis[2].length + z) * p.heads + h;
}

// The window (or inverse window) of one token: a product of axis ranges.
struct Box {
  AxisNeighborhood a[3];
  __host__ __device__ __forceinline__ int64_t size() const { return a[0].count * a[1].count * a[2].count; }
  // Token coordinates of the i-th element in x-y-z order.
  __host__ __device__ __forceinline__ void at(int64_t i, int64_t& x, int64_t& y, int64_t& z) const {
    z = a[2].first + (i % a[2].count) * a[2].step; i /= a[2].count;
    y = a[1].first + (i % a[1].count) * a[1].step; i /= a[1].count;
    x = a[0].first + i * a[0].step;
  }
  // Inverse of `at` for a token known to be inside the box.
  __host__ __device__ __forceinline__ int64_t index_of(int64_t x, int64_t y, int64_t z) const {
    return (((x - a[0].first) / a[0].step) * a[1].count + (y - a[1].first) / a[1].step) * a[2].count +
           (z - a[2].first) / a[2].step;
  }
};

__host__ __device__ __forceinline__ Box window_box(const Params& p, int64_t x, int64_t y, int64_t z) {
  return {{token_window(p.axis[0], x), token_window(p.axis[1], y), token_window(p.axis[2], z)}};
}

__host__ __device__ __forceinline__ Box inverse_window_box(const Params& p, int64_t x, int64_t y, int64_t z) {
  return {{token_inverse_window(p.axis[0], x), token_inverse_window(p.axis[1], y),
           token_inverse_window(p.axis[2], z)}};
}

// Largest window of any query: the product of kernel sizes.
inline int64_t window_capacity(const Params& p) {
  return int64_t(p.axis[0].kernel) * p.axis[1].kernel * p.axis[2].kernel;
}

}  // namespace nhood::cuda::naive
