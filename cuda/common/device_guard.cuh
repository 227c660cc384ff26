// Makes a device current for a scope and restores the caller's afterwards,
// so kernels run where the tensors live (params.device.index) without
// changing the current device of the calling thread as a side effect.
#pragma once

#include <cuda_runtime_api.h>

#include "check.cuh"

namespace nhood::cuda {

class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    NHOOD_CUDA_CHECK(cudaGetDevice(&previous_));
    if (device != previous_) NHOOD_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() {
    int now = previous_;
    if (cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);  // no throw in a destructor
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace nhood::cuda
