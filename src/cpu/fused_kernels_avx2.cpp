// AVX2 + FMA kernels. CMake compiles only this file with -mavx2 -mfma; it is
// called only after __builtin_cpu_supports says the CPU has both. Everything
// here has internal linkage (fused_kernels_impl.hpp), so no AVX2 copy of an
// inline function can be picked by the linker for baseline code.
#include "fused_kernels.hpp"

#if defined(__AVX2__) && defined(__FMA__)
#define NHOOD_KERNEL_NS avx2
#define NHOOD_VEC_FLOATS 8
#define NHOOD_VEC_REGS 16
#include "fused_kernels_impl.hpp"

namespace nhood::cpu::fused {
const KernelTable* kernels_avx2() { return &avx2::table; }
}  // namespace nhood::cpu::fused
#else
namespace nhood::cpu::fused {
const KernelTable* kernels_avx2() { return nullptr; }
}  // namespace nhood::cpu::fused
#endif
