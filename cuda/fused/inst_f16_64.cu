#include "launch.cuh"
namespace nhood::fused {
template void launch_forward<__half, 64, fwd_mi<64>()>(const Params&, const Geo&, cudaStream_t);
NHOOD_FUSED_INSTANTIATE(__half, 64)
}
