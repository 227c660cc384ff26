// Forward-only instantiation (backward supports head dim <= 128).
#include "launch.cuh"
namespace nhood::fused {
template void launch_forward<__nv_bfloat16, 256, fwd_mi<256>()>(const Params&, const Geo&, cudaStream_t);
}
