#include "launch.cuh"
namespace nhood::hopper {
NHOOD_HOPPER_INSTANTIATE(__half, 128)
}
