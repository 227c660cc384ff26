// Element access for the storage types of nhood tensors. Kernels compute in
// Compute<T>::type (float, or double for float64 storage) and read/write
// storage through load/store, so one kernel template serves every dtype.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "nhood/types.hpp"

namespace nhood::cuda {

template <typename T> struct Compute { using type = float; };
template <> struct Compute<double> { using type = double; };

__device__ __forceinline__ float load(const float* p) { return *p; }
__device__ __forceinline__ double load(const double* p) { return *p; }
__device__ __forceinline__ float load(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(double* p, double v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// Calls f(T{}) with the CUDA storage type of `dtype` (host code).
template <typename F>
decltype(auto) visit_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::float64: return f(double{});
    case DType::float32: return f(float{});
    case DType::float16: return f(__half{});
    case DType::bfloat16: break;
  }
  return f(__nv_bfloat16{});
}

}  // namespace nhood::cuda
