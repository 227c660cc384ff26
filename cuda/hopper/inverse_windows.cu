// The dK/dV pass's inverse windows (BwdArgs::inverse, backward.cuh): for
// every token index i of each axis, the group positions [begin, end) of the
// queries in i's dilation group that attend it, axes one after another. A
// kernel of its own rather than a job of the statistics kernel: its
// registers there cut that kernel's occupancy (2-D statistics 0.62 -> 0.80 ms).
// It also zeroes the passes' item claim counters (for_each_claimed_item).
#include <cuda_runtime.h>

#include <algorithm>

#include "../common/check.cuh"
#include "pipeline.cuh"

namespace nhood::hopper {
namespace {

__global__ void inverse_window_kernel(const Params p, int2* table, int* claims, int n_claims) {
  if (blockIdx.x == 0 && int(threadIdx.x) < n_claims) claims[threadIdx.x] = 0;
  const int64_t n = p.axis[0].length + p.axis[1].length + p.axis[2].length;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int a = e < p.axis[0].length ? 0 : e < p.axis[0].length + p.axis[1].length ? 1 : 2;
    const AxisWindow w = a == 0 ? p.axis[0] : a == 1 ? p.axis[1] : p.axis[2];
    const int i = int(e - (a > 0 ? p.axis[0].length : 0) - (a > 1 ? p.axis[1].length : 0));  // axes < 2^30
    const int g = i % w.dilation;
    const IndexRange r = inverse_window_in_group(w, i / w.dilation, group_length(w, g));
    table[e] = make_int2(int(r.begin), int(r.end));
  }
}

}  // namespace

void launch_inverse_windows(const Params& p, int2* table, int* claims, int n_claims, cudaStream_t stream) {
  const int64_t positions = p.axis[0].length + p.axis[1].length + p.axis[2].length;
  inverse_window_kernel<<<unsigned(std::min<int64_t>((positions + 127) / 128, 65536)), 128, 0, stream>>>(p, table, claims, n_claims);
  NHOOD_CUDA_CHECK_LAUNCH("hopper backward inverse windows");
}

}  // namespace nhood::hopper
