// Stream-ordered scratch memory: allocated with cudaMallocAsync on the
// caller's stream and released with cudaFreeAsync on the same stream when
// the owner goes out of scope. Kernels enqueued on that stream in between see
// valid memory; nothing synchronizes the device or the host.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <new>
#include <utility>

#include "check.cuh"

namespace nhood::cuda {

class Workspace {
 public:
  Workspace(size_t bytes, cudaStream_t stream) : stream_(stream) {
    if (bytes > 0) NHOOD_CUDA_CHECK(cudaMallocAsync(&data_, bytes, stream_));
  }
  // Scratch a caller can do without: on failure (out of memory) data stays
  // null, the error is cleared, and ok() is false.
  Workspace(size_t bytes, cudaStream_t stream, std::nothrow_t) : stream_(stream) {
    if (bytes > 0 && cudaMallocAsync(&data_, bytes, stream_) != cudaSuccess) {
      data_ = nullptr;
      cudaGetLastError();
    }
  }
  ~Workspace() {
    if (data_) cudaFreeAsync(data_, stream_);  // no throw in a destructor
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  template <typename T>
  T* as() const { return static_cast<T*>(data_); }
  bool ok() const { return data_ != nullptr; }

 private:
  void* data_ = nullptr;
  cudaStream_t stream_;
};

}  // namespace nhood::cuda
