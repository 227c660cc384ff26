// Canonical problem handed to every backend: always three spatial axes (1-D
// and 2-D problems get unit axes), strides in elements, plain data only so
// the struct can be passed by value to CUDA kernels. Built once by the
// front end (src/params.cpp) after validation; backends never re-validate.
#pragma once

#include <cstdint>

#include "nhood/types.hpp"
#include "nhood/window.hpp"

namespace nhood::detail {

// A [B, X, Y, Z, H, D] operand. Unit spatial axes have stride 0.
struct Operand {
  void* data = nullptr;
  int64_t sb = 0, sx = 0, sy = 0, sz = 0, sh = 0, sd = 0;
};

// A [B, N_add, H, D] operand (additional key/value tokens and their grads).
struct TokenOperand {
  void* data = nullptr;
  int64_t sb = 0, sn = 0, sh = 0, sd = 0;
};

struct Params {
  DType dtype = DType::float32;  // of q, k, v, out, d_out, dq, dk, dv and additional KV
  Device device{};
  int64_t batch = 0, heads = 0, heads_kv = 0, head_dim = 0, head_dim_v = 0, n_additional = 0;
  AxisWindow axis[3];  // x, y, z; x is the outermost spatial axis
  double scale = 1.0;
  bool deterministic = false;

  Operand q, k, v, out;
  Operand lse;  // float32 [B, X, Y, Z, H]; sd unused. data may be null in forward.
  TokenOperand add_k, add_v;  // data null when n_additional == 0

  // Backward only.
  Operand d_out, dq, dk, dv;
  TokenOperand d_add_k, d_add_v;

  NHOOD_HOST_DEVICE int64_t tokens() const { return axis[0].length * axis[1].length * axis[2].length; }
  NHOOD_HOST_DEVICE int64_t heads_per_kv() const { return heads / heads_kv; }
};

}  // namespace nhood::detail
