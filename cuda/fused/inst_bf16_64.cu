#include "launch.cuh"
namespace nhood::fused {
template void launch_forward<__nv_bfloat16, 64, fwd_mi<64>()>(const Params&, const Geo&, cudaStream_t);
NHOOD_FUSED_INSTANTIATE(__nv_bfloat16, 64)
}
