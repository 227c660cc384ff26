// Kernel bodies shared by every instruction set. Included once per ISA
// translation unit with NHOOD_KERNEL_NS (namespace) and NHOOD_VEC_FLOATS
// (vector width in floats) defined; GCC/Clang vector extensions lower the same
// source to SSE, AVX2+FMA or NEON depending on that file's compile flags.
//
// Only compiler builtins are used here, no std:: templates: an inline
// template instantiated in the AVX2 file could otherwise be merged by the
// linker with the baseline copy and run on a CPU without AVX2.
#include <cstdint>

#include "fused_kernels.hpp"

namespace nhood::cpu::fused::NHOOD_KERNEL_NS {
namespace {

constexpr int W = NHOOD_VEC_FLOATS;
static_assert(kPad % W == 0, "padding must be whole vectors");
typedef float vf __attribute__((vector_size(W * 4)));
typedef int32_t vi __attribute__((vector_size(W * 4)));

inline vf load(const float* p) { vf v; __builtin_memcpy(&v, p, sizeof v); return v; }
inline void store(float* p, vf v) { __builtin_memcpy(p, &v, sizeof v); }
inline vf splat(float a) { return vf{} + a; }

// Rows i < M of C = A * B over `nv` column vectors starting at B, C. Two
// vectors per step when possible: M*2 accumulators stay in registers while
// each B load is reused M times and each A broadcast twice.
template <int M>
void gemm_rows(int64_t nv, int64_t depth, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
               int64_t ldc) {
  int64_t v = 0;
  for (; v + 2 <= nv; v += 2) {
    vf acc0[M], acc1[M];
    for (int i = 0; i < M; ++i) acc0[i] = acc1[i] = vf{};
    const float* b = B + v * W;
    for (int64_t d = 0; d < depth; ++d) {
      const vf b0 = load(b + d * ldb), b1 = load(b + d * ldb + W);
      for (int i = 0; i < M; ++i) {
        const vf a = splat(A[i * lda + d]);
        acc0[i] += a * b0;
        acc1[i] += a * b1;
      }
    }
    for (int i = 0; i < M; ++i) {
      store(C + i * ldc + v * W, acc0[i]);
      store(C + i * ldc + v * W + W, acc1[i]);
    }
  }
  if (v < nv) {
    vf acc[M];
    for (int i = 0; i < M; ++i) acc[i] = vf{};
    const float* b = B + v * W;
    for (int64_t d = 0; d < depth; ++d) {
      const vf b0 = load(b + d * ldb);
      for (int i = 0; i < M; ++i) acc[i] += splat(A[i * lda + d]) * b0;
    }
    for (int i = 0; i < M; ++i) store(C + i * ldc + v * W, acc[i]);
  }
}

void gemm_nt(int64_t m, int64_t n, int64_t depth, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
             int64_t ldc) {
  const int64_t nv = (n + W - 1) / W;
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) gemm_rows<4>(nv, depth, A + i * lda, lda, B, ldb, C + i * ldc, ldc);
  switch (m - i) {
    case 3: gemm_rows<3>(nv, depth, A + i * lda, lda, B, ldb, C + i * ldc, ldc); break;
    case 2: gemm_rows<2>(nv, depth, A + i * lda, lda, B, ldb, C + i * ldc, ldc); break;
    case 1: gemm_rows<1>(nv, depth, A + i * lda, lda, B, ldb, C + i * ldc, ldc); break;
    default: break;
  }
}

// Narrow bands (n <= W columns, e.g. 2 queries of a 7-wide window): one
// vector per block, so M rows x J key-row blocks give M*J independent FMA
// chains per broadcast of A, instead of a latency-bound single vector.
template <int M, int J>
void gemm_blocks1(int64_t depth, const float* A, int64_t lda, const float* B, int64_t bstride, int64_t ldb, float* C,
                  int64_t cstride, int64_t ldc) {
  vf acc[M][J];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < J; ++j) acc[i][j] = vf{};
  for (int64_t d = 0; d < depth; ++d) {
    vf b[J];
    for (int j = 0; j < J; ++j) b[j] = load(B + j * bstride + d * ldb);
    for (int i = 0; i < M; ++i) {
      const vf a = splat(A[i * lda + d]);
      for (int j = 0; j < J; ++j) acc[i][j] += a * b[j];
    }
  }
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < J; ++j) store(C + j * cstride + i * ldc, acc[i][j]);
}

template <int M>
void gemm_blocks_rows(int64_t nb, int64_t depth, const float* A, int64_t lda, const float* B, int64_t bstride,
                      int64_t ldb, float* C, int64_t cstride, int64_t ldc) {
  int64_t j = 0;
  for (; j + 4 <= nb; j += 4) gemm_blocks1<M, 4>(depth, A, lda, B + j * bstride, bstride, ldb, C + j * cstride, cstride, ldc);
  switch (nb - j) {
    case 3: gemm_blocks1<M, 3>(depth, A, lda, B + j * bstride, bstride, ldb, C + j * cstride, cstride, ldc); break;
    case 2: gemm_blocks1<M, 2>(depth, A, lda, B + j * bstride, bstride, ldb, C + j * cstride, cstride, ldc); break;
    case 1: gemm_blocks1<M, 1>(depth, A, lda, B + j * bstride, bstride, ldb, C + j * cstride, cstride, ldc); break;
    default: break;
  }
}

void gemm_nt_blocks(int64_t m, int64_t nb, int64_t n, int64_t depth, const float* A, int64_t lda, const float* B,
                    int64_t bstride, int64_t ldb, float* C, int64_t cstride, int64_t ldc) {
  if (n > W) {
    for (int64_t j = 0; j < nb; ++j) gemm_nt(m, n, depth, A, lda, B + j * bstride, ldb, C + j * cstride, ldc);
    return;
  }
  int64_t i = 0;
  for (; i + 2 <= m; i += 2) gemm_blocks_rows<2>(nb, depth, A + i * lda, lda, B, bstride, ldb, C + i * ldc, cstride, ldc);
  if (i < m) gemm_blocks_rows<1>(nb, depth, A + i * lda, lda, B, bstride, ldb, C + i * ldc, cstride, ldc);
}

void combine(int64_t count, const float* c, const float* rows, int64_t ldr, float* out, int64_t width) {
  // Four vectors of `out` stay in registers across all rows; even and odd
  // rows go to separate accumulators so two FMA chains run in parallel
  // (count is often only 7-13, so one chain would be latency-bound).
  int64_t x = 0;
  for (; x + 4 * W <= width; x += 4 * W) {
    vf a0 = load(out + x), a1 = load(out + x + W), a2 = load(out + x + 2 * W), a3 = load(out + x + 3 * W);
    vf b0 = vf{}, b1 = vf{}, b2 = vf{}, b3 = vf{};
    int64_t j = 0;
    for (; j + 2 <= count; j += 2) {
      const vf s = splat(c[j]), t = splat(c[j + 1]);
      const float* r = rows + j * ldr + x;
      const float* q = r + ldr;
      a0 += s * load(r);
      a1 += s * load(r + W);
      a2 += s * load(r + 2 * W);
      a3 += s * load(r + 3 * W);
      b0 += t * load(q);
      b1 += t * load(q + W);
      b2 += t * load(q + 2 * W);
      b3 += t * load(q + 3 * W);
    }
    if (j < count) {
      const vf s = splat(c[j]);
      const float* r = rows + j * ldr + x;
      a0 += s * load(r);
      a1 += s * load(r + W);
      a2 += s * load(r + 2 * W);
      a3 += s * load(r + 3 * W);
    }
    store(out + x, a0 + b0); store(out + x + W, a1 + b1); store(out + x + 2 * W, a2 + b2);
    store(out + x + 3 * W, a3 + b3);
  }
  for (; x < width; x += W) {
    vf a = load(out + x), b = vf{};
    int64_t j = 0;
    for (; j + 2 <= count; j += 2) {
      a += splat(c[j]) * load(rows + j * ldr + x);
      b += splat(c[j + 1]) * load(rows + (j + 1) * ldr + x);
    }
    if (j < count) a += splat(c[j]) * load(rows + j * ldr + x);
    store(out + x, a + b);
  }
}

void axpy(int64_t width, float a, const float* x, float* y) {
  const vf s = splat(a);
  for (int64_t i = 0; i < width; i += W) store(y + i, load(y + i) + s * load(x + i));
}

// exp with Cephes' range reduction and degree-6 polynomial: ~1 ulp over the
// range softmax needs. Inputs below -87 (incl. -inf) give exactly 0.
inline vf vexp(vf x) {
  const vi tiny = x < splat(-87.0f);
  x = x > splat(88.0f) ? splat(88.0f) : x;
  x = x < splat(-87.0f) ? splat(-87.0f) : x;
  const vf magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  vf n = (x * splat(1.44269504088896341f) + magic) - magic;
  const vf r = x - n * splat(0.693359375f) - n * splat(-2.12194440e-4f);
  vf y = splat(1.9875691500e-4f);
  y = y * r + splat(1.3981999507e-3f);
  y = y * r + splat(8.3334519073e-3f);
  y = y * r + splat(4.1665795894e-2f);
  y = y * r + splat(1.6666665459e-1f);
  y = y * r + splat(5.0000001201e-1f);
  y = y * r * r + r + splat(1.0f);
  const vi e = (__builtin_convertvector(n, vi) + 127) << 23;
  y = y * (vf)e;
  return (vf)((vi)y & ~tiny);
}

// Vector max, then exp and sum in one pass over the (short, contiguous) row.
float exp_sum(float* x, int64_t n, float* max_out) {
  vf vm = splat(-__builtin_inff());
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    const vf v = load(x + i);
    vm = v > vm ? v : vm;
  }
  float mx = -__builtin_inff();
  for (int l = 0; l < W; ++l) mx = vm[l] > mx ? vm[l] : mx;
  for (; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  *max_out = mx;
  const vf sh = splat(mx);
  vf acc = vf{};
  i = 0;
  for (; i + W <= n; i += W) {
    const vf e = vexp(load(x + i) - sh);
    store(x + i, e);
    acc += e;
  }
  if (i < n) {  // tail through a padded copy; pad lanes are -inf -> exactly 0
    float buf[W];
    for (int l = 0; l < W; ++l) buf[l] = i + l < n ? x[i + l] : -__builtin_inff();
    const vf e = vexp(load(buf) - sh);
    store(buf, e);
    acc += e;
    for (int64_t l = 0; i + l < n; ++l) x[i + l] = buf[l];
  }
  float s = 0;
  for (int l = 0; l < W; ++l) s += acc[l];
  return s;
}

}  // namespace

#define NHOOD_STR2(x) #x
#define NHOOD_STR(x) NHOOD_STR2(x)
const KernelTable table = {NHOOD_STR(NHOOD_KERNEL_NS), W, gemm_nt, gemm_nt_blocks, combine, axpy, exp_sum};

}  // namespace nhood::cpu::fused::NHOOD_KERNEL_NS
