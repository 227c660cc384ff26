// Grid sizing for element-wise kernels over 64-bit index spaces. Kernels use
// grid-stride loops, so a capped grid covers any count (> 2^31 included).
#pragma once

#include <cstdint>

namespace nhood::cuda {

constexpr int kThreads = 256;

inline unsigned grid_for(int64_t count, int threads = kThreads) {
  const int64_t blocks = (count + threads - 1) / threads;
  const int64_t cap = int64_t(1) << 20;  // plenty to fill any GPU; the loop does the rest
  return unsigned(blocks < 1 ? 1 : (blocks > cap ? cap : blocks));
}

// for (int64_t i : grid_stride(n)) style loop, spelled out for device code.
#define NHOOD_GRID_STRIDE(i, n)                                                                     \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);                      \
       i += int64_t(gridDim.x) * blockDim.x)

}  // namespace nhood::cuda
