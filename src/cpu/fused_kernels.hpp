// Hot inner loops of the fused CPU backend, compiled once per instruction set
// (fused_kernels_generic.cpp, fused_kernels_avx2.cpp) and chosen at run time,
// so one portable binary uses AVX2/FMA where the CPU has it.
//
// All buffers are packed float32 made by the caller (fused_tile.hpp): rows
// padded to kPad floats, so kernels only ever touch whole vectors and may
// read/write up to the next multiple of kPad past the logical end.
#pragma once

#include <cstdint>

namespace nhood::cpu::fused {

constexpr int64_t kPad = 16;  // widest vector (AVX-512) in floats
inline int64_t pad_to(int64_t n) { return (n + kPad - 1) / kPad * kPad; }

struct KernelTable {
  const char* isa;
  int64_t vec;  // floats per vector
  // C[i*ldc + j] = sum_d A[i*lda + d] * B[d*ldb + j] for i < m, j < n.
  // Writes (and reads B) up to j < n rounded up to kPad.
  void (*gemm_nt)(int64_t m, int64_t n, int64_t depth, const float* A, int64_t lda, const float* B, int64_t ldb,
                  float* C, int64_t ldc);
  // gemm_nt over nb blocks: block j reads B + j*bstride and writes C + j*cstride.
  void (*gemm_nt_blocks)(int64_t m, int64_t nb, int64_t n, int64_t depth, const float* A, int64_t lda, const float* B,
                         int64_t bstride, int64_t ldb, float* C, int64_t cstride, int64_t ldc);
  // out[0:width] += sum_{j<count} c[j] * rows[j*ldr + 0:width]; width % kPad == 0.
  void (*combine)(int64_t count, const float* c, const float* rows, int64_t ldr, float* out, int64_t width);
  // y[0:width] += a * x[0:width]; width % kPad == 0.
  void (*axpy)(int64_t width, float a, const float* x, float* y);
  // *max_out = max_j x[j]; x[j] = exp(x[j] - max) for j < n (exactly n
  // elements, n >= 1); returns their sum.
  float (*exp_sum)(float* x, int64_t n, float* max_out);
};

// The best table this CPU supports (chosen once).
const KernelTable& kernels();

// Per-ISA tables; avx2 returns nullptr when the build could not compile it.
const KernelTable* kernels_generic();
const KernelTable* kernels_avx2();

}  // namespace nhood::cpu::fused
