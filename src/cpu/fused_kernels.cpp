// Run-time choice of the kernel table: checked once, the first time a fused
// CPU call runs. NHOOD_CPU_ISA=generic forces the portable kernels (tests).
#include "fused_kernels.hpp"

#include <cstdlib>
#include <cstring>

namespace nhood::cpu::fused {

const KernelTable& kernels() {
  static const KernelTable* table = [] {
    const char* force = std::getenv("NHOOD_CPU_ISA");
    const bool generic_only = force && std::strcmp(force, "generic") == 0;
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    if (!generic_only && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      if (const KernelTable* t = kernels_avx2()) return t;
#endif
    (void)generic_only;
    return kernels_generic();
  }();
  return *table;
}

}  // namespace nhood::cpu::fused
