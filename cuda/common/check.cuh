// CUDA error checking for every kernel family. Any failing runtime call or
// launch becomes nhood::Error(ErrorKind::runtime) naming the call, the source
// location and cudaGetErrorString, so Python sees a RuntimeError, not a crash.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "nhood/error.hpp"

namespace nhood::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  throw Error(ErrorKind::runtime, std::string("CUDA error in ") + what + " (" + file + ":" + std::to_string(line) +
                                      "): " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

inline void check(cudaError_t err, const char* what, const char* file, int line) {
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear a non-sticky error so later calls start clean
    throw_cuda_error(err, what, file, line);
  }
}

}  // namespace nhood::cuda

// Wraps one runtime call: NHOOD_CUDA_CHECK(cudaMemsetAsync(...)).
#define NHOOD_CUDA_CHECK(expr) ::nhood::cuda::check((expr), #expr, __FILE__, __LINE__)
// After each <<<...>>>: reports launch-configuration errors (asynchronous
// faults surface at the caller's next synchronizing call, as for any CUDA op).
#define NHOOD_CUDA_CHECK_LAUNCH(name) ::nhood::cuda::check(cudaGetLastError(), "launch of " name, __FILE__, __LINE__)
