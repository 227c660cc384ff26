#include "launch.cuh"
namespace nhood::hopper {
NHOOD_HOPPER_INSTANTIATE(__nv_bfloat16, 64)
template void launch_stats<__nv_bfloat16>(const Params&, float2*, cudaStream_t);  // once per dtype
template void launch_dq_from_accum<__nv_bfloat16>(const Params&, const float*, cudaStream_t);
}
