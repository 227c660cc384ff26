// AVX-512 kernels (16-float vectors, 32 registers). CMake compiles only this
// file with -mavx512f -mavx2 -mfma; it is called only after
// __builtin_cpu_supports says the CPU (and OS) has AVX-512F. Internal linkage
// as in fused_kernels_avx2.cpp.
#include "fused_kernels.hpp"

#if defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
#define NHOOD_KERNEL_NS avx512
#define NHOOD_VEC_FLOATS 16
#define NHOOD_VEC_REGS 32
#include "fused_kernels_impl.hpp"

namespace nhood::cpu::fused {
const KernelTable* kernels_avx512() { return &avx512::table; }
}  // namespace nhood::cpu::fused
#else
namespace nhood::cpu::fused {
const KernelTable* kernels_avx512() { return nullptr; }
}  // namespace nhood::cpu::fused
#endif
