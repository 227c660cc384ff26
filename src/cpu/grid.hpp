// Addressing and window iteration shared by the CPU backends.
#pragma once

#include <cstdint>

#include "nhood/detail/params.hpp"
#include "nhood/window.hpp"

namespace nhood::cpu {

using detail::Operand;
using detail::Params;
using detail::TokenOperand;

// Element offset of (b, x, y, z, h, 0) in a grid operand.
inline int64_t offset(const Operand& o, int64_t b, int64_t x, int64_t y, int64_t z, int64_t h) {
  return b * o.sb + x * o.sx + y * o.sy + z * o.sz + h * o.sh;
}
inline int64_t offset(const TokenOperand& o, int64_t b, int64_t n, int64_t h) {
  return b * o.sb + n * o.sn + h * o.sh;
}

// The tokens of a 3-D window (or inverse window): a product of axis ranges.
struct Box {
  AxisNeighborhood axis[3];
  int64_t size() const { return axis[0].count * axis[1].count * axis[2].count; }

  template <typename F>
  void for_each(F&& f) const {
    for (int64_t i = 0; i < axis[0].count; ++i)
      for (int64_t j = 0; j < axis[1].count; ++j)
        for (int64_t k = 0; k < axis[2].count; ++k)
          f(axis[0].first + i * axis[0].step, axis[1].first + j * axis[1].step, axis[2].first + k * axis[2].step);
  }
};

// Keys attended by the query token (x, y, z).
inline Box window_box(const Params& p, int64_t x, int64_t y, int64_t z) {
  return {{token_window(p.axis[0], x), token_window(p.axis[1], y), token_window(p.axis[2], z)}};
}

// Queries that attend the key token (x, y, z).
inline Box inverse_window_box(const Params& p, int64_t x, int64_t y, int64_t z) {
  return {{token_inverse_window(p.axis[0], x), token_inverse_window(p.axis[1], y),
           token_inverse_window(p.axis[2], z)}};
}

// Splits a flat row index over [B, X, Y, Z, heads] (heads fastest).
struct RowIndex {
  int64_t b, x, y, z, h;
};
inline RowIndex split_row(const Params& p, int64_t row, int64_t heads) {
  RowIndex r;
  r.h = row % heads; row /= heads;
  r.z = row % p.axis[2].length; row /= p.axis[2].length;
  r.y = row % p.axis[1].length; row /= p.axis[1].length;
  r.x = row % p.axis[0].length;
  r.b = row / p.axis[0].length;
  return r;
}

}  // namespace nhood::cpu
