#include "launch.cuh"
namespace nhood::hopper {
NHOOD_HOPPER_INSTANTIATE(__half, 64)
template void launch_stats<__half>(const Params&, float2*, cudaStream_t);  // once per dtype
template void launch_dq_from_accum<__half>(const Params&, const float*, cudaStream_t);
}
