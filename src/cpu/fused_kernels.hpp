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

  // Band kernels (forward; layout in fused_kernels_impl.hpp). m <= 8 queries.
  // S[i*lds + r*rowlen + 0:nvb*vec] = A_i . B[r*bstride + d*ldb + 0:nvb*vec] for r < nrows.
  void (*band_qk)(int64_t m, int64_t nvb, int64_t nrows, int64_t depth, const float* A, int64_t lda, const float* B,
                  int64_t bstride, int64_t ldb, float* S, int64_t rowlen, int64_t lds);
  // Softmax numerators of m queries: query i's rows are S + i*lds (nrows rows of
  // rowlen floats, its lanes [lo[i] - c0, hi[i] - c0)) followed by nt floats
  // (additional tokens). Writes exp(x - max) there and 0 in the other lanes
  // (rowlen and nt rounded up to vec); max_out[i], sum_out[i].
  void (*band_softmax)(int64_t m, float* S, int64_t lds, int64_t nrows, int64_t rowlen, const int64_t* lo,
                       const int64_t* hi, int64_t c0, int64_t nt, float* max_out, float* sum_out);
  // O[i*ldo + 0:width] += sum_{r<nrows, w<bw} P[i*lds + r*rowlen + w] * V[r*vstride + w*ldv + 0:width].
  void (*band_pv)(int64_t m, int64_t nrows, int64_t bw, const float* P, int64_t rowlen, int64_t lds, const float* V,
                  int64_t vstride, int64_t ldv, float* O, int64_t ldo, int64_t width);
  // dst[c*ldd + r] = src[r*lds + c] for r < rows, c < cols, and 0 for
  // rows <= r < ldd (the padding kernels read past the last key); needs
  // ldd >= rows + kPad.
  void (*transpose)(const float* src, int64_t lds, int64_t rows, int64_t cols, float* dst, int64_t ldd);

  // Paired-query band kernels (bands of at most vec/2 columns; m <= 2): both
  // queries' logits of one key row in one vector, S[r*vec + l] (lanes
  // [0, vec/2) query 0, the rest query 1), then query i's nt additional-token
  // floats at S + nrows*vec + i*ldt (layout in fused_kernels_impl.hpp;
  // band_pv reads it with rowlen = vec, lds = vec/2). nullptr where not
  // compiled (tables of 4-float vectors, compilers without
  // __builtin_shufflevector).
  void (*band_qkq)(int64_t m, int64_t nrows, int64_t depth, const float* A, int64_t lda, const float* B,
                   int64_t bstride, int64_t ldb, float* S);
  void (*band_softmaxq)(int64_t m, float* S, int64_t nrows, const int64_t* lo, const int64_t* hi, int64_t c0,
                        int64_t nt, int64_t ldt, float* max_out, float* sum_out);
};

// The best table this CPU supports (chosen once; NHOOD_CPU_ISA=generic|avx2
// caps it).
const KernelTable& kernels();

// Per-ISA tables; avx2 returns nullptr when the build could not compile it.
const KernelTable* kernels_generic();
const KernelTable* kernels_avx2();
const KernelTable* kernels_avx512();

}  // namespace nhood::cpu::fused
