// Whether CUDA kernels can run here. Safe on machines without a driver.
#include "nhood/api.hpp"

#ifdef NHOOD_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace nhood {

bool cuda_available() {
#ifdef NHOOD_WITH_CUDA
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return false;
  }
  return count > 0;
#else
  return false;
#endif
}

}  // namespace nhood
