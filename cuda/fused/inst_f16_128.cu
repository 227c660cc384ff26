#include "launch.cuh"
namespace nhood::fused {
NHOOD_FUSED_INSTANTIATE(__half, 128)
}
