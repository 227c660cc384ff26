#include "launch.cuh"
namespace nhood::fused {
template void launch_forward<__nv_bfloat16, 32, fwd_mi<32>()>(const Params&, const Geo&, cudaStream_t);
template void launch_small_forward<__nv_bfloat16, 32>(const Params&, const Geo&, cudaStream_t);
NHOOD_FUSED_INSTANTIATE(__nv_bfloat16, 32)
}
