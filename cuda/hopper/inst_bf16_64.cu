#include "launch.cuh"
namespace nhood::hopper {
NHOOD_HOPPER_INSTANTIATE(__nv_bfloat16, 64)
}
