// XLA FFI buffers and attributes -> libnhood tensor views and window args.
//
// Kept apart from the handlers so the CPU and CUDA handlers share one
// decoding (they differ only in device and stream). Decoding throws
// nhood::Error; the handlers turn that into an FFI error.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "nhood/nhood.hpp"
#include "xla/ffi/api/ffi.h"

namespace nhood_jax {

namespace ffi = xla::ffi;

inline nhood::DType to_dtype(ffi::DataType type, const char* name) {
  switch (type) {
    case ffi::DataType::F64: return nhood::DType::float64;
    case ffi::DataType::F32: return nhood::DType::float32;
    case ffi::DataType::F16: return nhood::DType::float16;
    case ffi::DataType::BF16: return nhood::DType::bfloat16;
    default:
      throw nhood::Error(nhood::ErrorKind::type, std::string(name) +
                                                     " must have dtype float64, float32, float16 or bfloat16 (XLA type " +
                                                     std::to_string(int(type)) + ")");
  }
}

// XLA hands dense row-major buffers. `core_dims` counts the trailing axes
// that are not batch (spatial + heads + dim for query, heads only after the
// spatial axes for lse, ...). Every axis before them is folded into batch:
// that is how vmap works — ffi_call(vmap_method="broadcast_all") prepends
// the mapped axes, and for a dense buffer [V, B, ...] is the same memory as
// [V*B, ...], so no copy and no per-element loop is needed.
inline nhood::TensorView to_view(const ffi::AnyBuffer& buffer, int core_dims, nhood::Device device,
                                 const char* name) {
  const auto dims = buffer.dimensions();
  const int64_t ndim = int64_t(dims.size());
  if (ndim < core_dims + 1)
    throw nhood::Error(nhood::ErrorKind::value, std::string(name) + " must have at least " +
                                                    std::to_string(core_dims + 1) + " dimensions, got " +
                                                    std::to_string(ndim));
  int64_t shape[nhood::kMaxTensorDims];
  int64_t batch = 1;
  for (int64_t i = 0; i < ndim - core_dims; ++i) batch *= dims[i];
  shape[0] = batch;
  for (int i = 0; i < core_dims; ++i) shape[1 + i] = dims[ndim - core_dims + i];
  return nhood::contiguous_view(buffer.untyped_data(), to_dtype(buffer.element_type(), name), device,
                                core_dims + 1, shape);
}

// Window attributes as nhood.jax passes them: int32 arrays of 3 entries per
// axis (unused axes padded with 1 / 0), like the arguments of nhood._core.
struct Window {
  int32_t rank;
  ffi::Span<const int32_t> kernel_size, stride, dilation, is_causal;
  bool has_scale;
  double scale;
};

inline nhood::WindowArgs window_args(const Window& w) {
  if (w.rank < 1 || w.rank > nhood::kMaxRank)
    throw nhood::Error(nhood::ErrorKind::value, "rank must be 1, 2 or 3, got " + std::to_string(w.rank));
  const ffi::Span<const int32_t>* per_axis[] = {&w.kernel_size, &w.stride, &w.dilation, &w.is_causal};
  for (const auto* a : per_axis)
    if (a->size() != size_t(nhood::kMaxRank))
      throw nhood::Error(nhood::ErrorKind::value, "window attributes must have 3 entries per argument");
  nhood::WindowArgs args;
  args.rank = w.rank;
  for (int i = 0; i < nhood::kMaxRank; ++i) {
    args.kernel_size[i] = w.kernel_size[i];
    args.stride[i] = w.stride[i];
    args.dilation[i] = w.dilation[i];
    args.is_causal[i] = w.is_causal[i] != 0;
  }
  args.has_scale = w.has_scale;
  args.scale = w.scale;
  return args;
}

inline nhood::Options options(std::string_view backend, void* stream, bool deterministic) {
  nhood::Options o;
  o.backend = nhood::backend_from_name(std::string(backend).c_str());
  o.stream = stream;
  o.deterministic = deterministic;
  return o;
}

}  // namespace nhood_jax
