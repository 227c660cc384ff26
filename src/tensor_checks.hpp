// Tensor-argument checks and the lowering of views to kernel operands, shared
// by every front end that validates tensors against a Problem (fused
// forward/backward in params.cpp, the unfused QK/AV ops in src/unfused/).
#pragma once

#include <vector>

#include "format.hpp"
#include "nhood/detail/params.hpp"
#include "nhood/problem.hpp"

namespace nhood::detail {

enum class Access { read, write };

// [B, *spatial, heads(, last)]; last < 0 leaves the trailing dimension out.
inline std::vector<int64_t> grid_shape(const Problem& p, int64_t heads, int64_t last) {
  std::vector<int64_t> s{p.batch};
  for (int i = 0; i < p.rank; ++i) s.push_back(p.spatial[i]);
  s.push_back(heads);
  if (last >= 0) s.push_back(last);
  return s;
}

inline std::string shape_string(const std::vector<int64_t>& s) {
  TensorView t;
  t.ndim = int(s.size());
  for (size_t i = 0; i < s.size(); ++i) t.shape[i] = s[i];
  return shape_string(t);
}

// One rule for every tensor argument: shape, dtype, device, writability, and
// no two elements of an output sharing memory through a zero stride.
inline void check_tensor(const TensorView& t, const char* name, const std::vector<int64_t>& shape, DType dtype,
                         Device device, Access access) {
  bool same = t.ndim == int(shape.size());
  for (int i = 0; same && i < t.ndim; ++i) same = t.shape[i] == shape[i];
  if (!same) fail(ErrorKind::value, name, " must have shape ", shape_string(shape), ", got ", shape_string(t));
  if (t.dtype != dtype)
    fail(ErrorKind::type, name, " must have dtype ", dtype_name(dtype), ", got ", dtype_name(t.dtype));
  if (t.device != device)
    fail(ErrorKind::value, name, " must be on ", device_string(device), " like query, got ", device_string(t.device));
  if (t.numel() > 0 && t.data == nullptr) fail(ErrorKind::value, name, " has a null data pointer");
  if (access == Access::write) {
    if (t.read_only) fail(ErrorKind::value, name, " is an output and must be writable, got a read-only array");
    // (empty arrays cannot alias; DLPack exporters may give them zero strides)
    for (int i = 0; i < t.ndim && t.numel() > 0; ++i)
      if (t.shape[i] > 1 && t.strides[i] == 0)
        fail(ErrorKind::value, name, " is an output and must not alias itself (stride 0 along dimension ", i,
             ")");
  }
}

// [B, *spatial, H(, D)] view -> [B, X, Y, Z, H, D] operand (unit axes: stride 0).
inline Operand grid_operand(const TensorView& t, int rank) {
  Operand o;
  o.data = t.data;
  o.sb = t.strides[0];
  int64_t* spatial[3] = {&o.sx, &o.sy, &o.sz};
  for (int i = 0; i < rank; ++i) *spatial[i] = t.strides[1 + i];
  o.sh = t.strides[rank + 1];
  o.sd = t.ndim > rank + 2 ? t.strides[rank + 2] : 0;
  return o;
}

inline TokenOperand token_operand(const TensorView& t) {
  return {t.data, t.strides[0], t.strides[1], t.strides[2], t.strides[3]};
}

}  // namespace nhood::detail
