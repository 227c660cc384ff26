// Run-time choice of the kernel table: checked once, the first time a fused
// CPU call runs. NHOOD_CPU_ISA=generic|avx2 caps the choice (tests, measurements).
#include "fused_kernels.hpp"

#include <cstdlib>
#include <cstring>

namespace nhood::cpu::fused {

const KernelTable& kernels() {
  static const KernelTable* table = [] {
    // NHOOD_CPU_ISA caps the choice: "generic" (portable), "avx2" (no
    // AVX-512); unset or anything else: the best this CPU has.
    const char* force = std::getenv("NHOOD_CPU_ISA");
    const bool generic_only = force && std::strcmp(force, "generic") == 0;
    const bool no_avx512 = generic_only || (force && std::strcmp(force, "avx2") == 0);
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (!no_avx512 && avx2 && __builtin_cpu_supports("avx512f"))
      if (const KernelTable* t = kernels_avx512()) return t;
    if (!generic_only && avx2)
      if (const KernelTable* t = kernels_avx2()) return t;
#endif
    (void)generic_only;
    (void)no_avx512;
    return kernels_generic();
  }();
  return *table;
}

}  // namespace nhood::cpu::fused
