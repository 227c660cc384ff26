#include <cstring>
#include <string>

#include "nhood/error.hpp"
#include "nhood/types.hpp"

namespace nhood {

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::float64: return "float64";
    case DType::float32: return "float32";
    case DType::float16: return "float16";
    case DType::bfloat16: return "bfloat16";
  }
  return "unknown";
}

int64_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::float64: return 8;
    case DType::float32: return 4;
    case DType::float16:
    case DType::bfloat16: return 2;
  }
  return 0;
}

namespace {
struct BackendName {
  Backend backend;
  const char* name;
};
constexpr BackendName kBackendNames[] = {
    {Backend::automatic, "auto"}, {Backend::reference, "reference"}, {Backend::cpu, "cpu"},
    {Backend::naive, "naive"},    {Backend::gemm, "gemm"},           {Backend::fused, "fused"},
    {Backend::hopper, "hopper"},
};
}  // namespace

const char* backend_name(Backend backend) {
  for (const auto& entry : kBackendNames)
    if (entry.backend == backend) return entry.name;
  return "unknown";
}

Backend backend_from_name(const char* name) {
  if (name == nullptr || name[0] == '\0') return Backend::automatic;
  std::string known;
  for (const auto& entry : kBackendNames) {
    if (std::strcmp(entry.name, name) == 0) return entry.backend;
    known += known.empty() ? "" : ", ";
    known += entry.name;
  }
  throw Error(ErrorKind::value, std::string("backend must be one of ") + known + "; got '" + name + "'");
}

TensorView contiguous_view(void* data, DType dtype, Device device, int32_t ndim, const int64_t* shape) {
  if (ndim < 0 || ndim > kMaxTensorDims)
    throw Error(ErrorKind::value, "contiguous_view: ndim must be in [0, " + std::to_string(kMaxTensorDims) +
                                      "], got " + std::to_string(ndim));
  TensorView view;
  view.data = data;
  view.dtype = dtype;
  view.device = device;
  view.ndim = ndim;
  int64_t stride = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    view.shape[i] = shape[i];
    view.strides[i] = stride;
    stride *= shape[i];
  }
  return view;
}

}  // namespace nhood
