// Portable kernels: 4-float vectors (SSE2 on x86-64, NEON on arm64, scalar
// code elsewhere), baseline instruction set only.
#define NHOOD_KERNEL_NS generic
#define NHOOD_VEC_FLOATS 4
#if defined(__aarch64__)
#define NHOOD_VEC_REGS 32
#else
#define NHOOD_VEC_REGS 16
#endif
#include "fused_kernels_impl.hpp"

namespace nhood::cpu::fused {
const KernelTable* kernels_generic() { return &generic::table; }
}  // namespace nhood::cpu::fused
