// Canonical parameters of the unfused QK/AV ops, handed to their backends
// after validation (src/unfused/). `shape` carries the problem in the form
// every backend already understands (axes, batch, heads, dims, dtype); its
// tensor operands are unused here. Plain data, passable to CUDA kernels.
#pragma once

#include <cstdint>

#include "nhood/detail/params.hpp"
#include "nhood/window.hpp"

namespace nhood::detail {

// Relative positional bias [H, 2K0-1, 2K1-1, 2K2-1]; unit axes: stride 0.
struct BiasOperand {
  void* data = nullptr;
  int64_t sh = 0, sx = 0, sy = 0, sz = 0;
};

struct QKParams {
  Params shape;       // head_dim: D of query/key
  int64_t n_window;   // prod(kernel_size): weight columns before the additional tokens
  Operand query, key, weights;   // weights [B, X, Y, Z, H, columns]; sd = column stride
  TokenOperand add_k;            // data null when n_additional == 0
  BiasOperand rpb;               // forward: optional input
  // Backward only: d_weights is an input, the rest outputs.
  Operand d_weights, d_query, d_key;
  TokenOperand d_add_k;
  BiasOperand d_rpb;             // data null when not requested
};

struct AVParams {
  Params shape;       // head_dim == head_dim_v: D_v of value
  int64_t n_window;
  Operand weights, value, out;
  TokenOperand add_v;
  // Backward only: d_out is an input, the rest outputs.
  Operand d_out, d_weights, d_value;
  TokenOperand d_add_v;
};

// Index of a key inside a query's window along one axis (0 .. count-1), and
// its group offset from the query (rpb index = offset + kernel - 1). Both
// derive from token_window; nothing here restates the window rule.
NHOOD_HOST_DEVICE int64_t window_slot(const AxisNeighborhood& w, int64_t key) { return (key - w.first) / w.step; }
NHOOD_HOST_DEVICE int64_t bias_index(const AxisWindow& a, int64_t query, int64_t key) {
  return (key - query) / a.dilation + a.kernel - 1;
}

}  // namespace nhood::detail
