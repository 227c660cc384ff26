#include "launch.cuh"
namespace nhood::fused {
NHOOD_FUSED_INSTANTIATE(__nv_bfloat16, 32)
}
