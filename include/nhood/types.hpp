// Plain value types of the public C++ API: element types, devices, backends
// and non-owning tensor views. No CUDA or Python headers are needed here.
#pragma once

#include <cstdint>

namespace nhood {

enum class DType : int32_t { float64 = 0, float32 = 1, float16 = 2, bfloat16 = 3 };

const char* dtype_name(DType dtype);
int64_t dtype_size(DType dtype);

enum class DeviceKind : int32_t { cpu = 0, cuda = 1 };

struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int32_t index = 0;
  friend bool operator==(const Device& a, const Device& b) {
    return a.kind == b.kind && (a.kind == DeviceKind::cpu || a.index == b.index);
  }
  friend bool operator!=(const Device& a, const Device& b) { return !(a == b); }
};

// Implementations of neighborhood attention. `automatic` picks the fastest
// one that supports a problem on its device (one dispatch table, src/dispatch.cpp).
enum class Backend : int32_t { automatic = 0, reference, cpu, naive, gemm, fused, hopper };

const char* backend_name(Backend backend);
// Parses "reference", "cpu", ... ; "auto" or "" give Backend::automatic.
// Throws nhood::Error for unknown names.
Backend backend_from_name(const char* name);

constexpr int kMaxTensorDims = 6;  // [batch, 3 spatial axes, heads, head dim]

// A non-owning view of a strided array. Shapes and strides count elements.
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::float32;
  Device device{};
  int32_t ndim = 0;
  int64_t shape[kMaxTensorDims] = {};
  int64_t strides[kMaxTensorDims] = {};
  bool read_only = false;

  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
};

// Builds a view over contiguous (row-major) memory.
TensorView contiguous_view(void* data, DType dtype, Device device, int32_t ndim, const int64_t* shape);

}  // namespace nhood
