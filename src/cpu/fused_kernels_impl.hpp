// Kernel bodies shared by every instruction set. Included once per ISA
// translation unit with NHOOD_KERNEL_NS (namespace) and NHOOD_VEC_FLOATS
// (vector width in floats) defined; GCC/Clang vector extensions lower the same
// source to SSE, AVX2+FMA or NEON depending on that file's compile flags.
//
// Only compiler builtins are used here, no std:: templates: an inline
// template instantiated in the AVX2 file could otherwise be merged by the
// linker with the baseline copy and run on a CPU without AVX2.
#include <cstdint>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "fused_kernels.hpp"

namespace nhood::cpu::fused::NHOOD_KERNEL_NS {
namespace {

constexpr int W = NHOOD_VEC_FLOATS;
static_assert(kPad % W == 0, "padding must be whole vectors");
typedef float vf __attribute__((vector_size(W * 4)));
typedef int32_t vi __attribute__((vector_size(W * 4)));

inline vf load(const float* p) { vf v; __builtin_memcpy(&v, p, sizeof v); return v; }
// A vector load used by several FMAs (one per query of a group), kept in a
// register: otherwise GCC may fold the load into each FMA as a memory
// operand, one load uop per use (pv_tile<2, 2>: 6 loads for 4 FMAs per step,
// load-bound; qk_tile with 2-3 queries likewise).
inline vf load_once(const float* p) {
  vf v = load(p);
#if defined(__AVX512F__)
  __asm__("" : "+v"(v));  // any of the 32 vector registers
#elif defined(__AVX__)
  __asm__("" : "+x"(v));
#endif
  return v;
}
inline void store(float* p, vf v) { __builtin_memcpy(p, &v, sizeof v); }
// a in every lane. `a - 0` is exactly a (also for -0.0 and NaN), so the
// compiler drops the subtraction and folds the broadcast into the consumer
// (AVX-512: an FMA with a {1to16} memory operand, one uop). `vf{} + a` is not
// a for a = -0.0: it compiled to a scalar add plus a register broadcast, two
// extra uops on the FMA/shuffle ports per splat; a lane loop compiled to
// per-lane inserts in some kernels.
inline vf splat(float a) { return a - vf{}; }

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
      const vf b0 = load_once(b + d * ldb), b1 = load_once(b + d * ldb + W);
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
      const vf b0 = load_once(b + d * ldb);
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
    for (int j = 0; j < J; ++j) b[j] = load_once(B + j * bstride + d * ldb);
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
// range softmax needs. Only for x <= 0 (every caller passes x - max, or -inf
// for lanes outside a window): no clamp above. Inputs below -87 (incl. -inf)
// give exactly 0; they are clamped to -87 first (one blend on the mask the
// zeroing needs anyway) so the exponent bits stay a normal float.
inline vf vexp(vf x) {
  const vi tiny = x < splat(-87.0f);
  x = tiny ? splat(-87.0f) : x;
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

// ---- band kernels (forward) ------------------------------------------------
// A band group is M consecutive queries of a segment and the union [c0, c1)
// of their z windows (bw = c1 - c0 columns, nvb = ceil(bw / W) vectors). Its
// logits live in S[i*lds + r*rowlen + v*W + l] (query i, key row r, column
// c0 + v*W + l), rowlen = nvb*W: no compaction, each query's own window is a
// lane range of every row, handled by masks in the softmax.

// Accumulator budget: 32 vector registers (AVX-512, NEON) or 16 (SSE, AVX2).
#if NHOOD_VEC_REGS >= 32
constexpr int kAcc = 24;
#else
constexpr int kAcc = 12;
#endif

// S rows r < J, vectors v < NB of M queries: M*J*NB accumulators; per depth
// step J*NB loads of B and M broadcasts of A.
template <int M, int J, int NB>
void qk_tile(int64_t depth, const float* A, int64_t lda, const float* B, int64_t bstride, int64_t ldb, float* S,
             int64_t rowlen, int64_t lds) {
  vf acc[M][J][NB];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < J; ++j)
      for (int v = 0; v < NB; ++v) acc[i][j][v] = vf{};
  for (int64_t d = 0; d < depth; ++d) {
    vf b[J][NB];
    for (int j = 0; j < J; ++j)
      for (int v = 0; v < NB; ++v) b[j][v] = load_once(B + j * bstride + d * ldb + v * W);
    for (int i = 0; i < M; ++i) {
      const vf a = splat(A[i * lda + d]);
      for (int j = 0; j < J; ++j)
        for (int v = 0; v < NB; ++v) acc[i][j][v] += a * b[j][v];
    }
  }
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < J; ++j)
      for (int v = 0; v < NB; ++v) store(S + i * lds + j * rowlen + v * W, acc[i][j][v]);
}

template <int M, int NB>
void qk_rows(int64_t nrows, int64_t depth, const float* A, int64_t lda, const float* B, int64_t bstride, int64_t ldb,
             float* S, int64_t rowlen, int64_t lds) {
  constexpr int jmax = kAcc / (M * NB) < 1 ? 1 : (kAcc / (M * NB) > 6 ? 6 : kAcc / (M * NB));
  // Balanced chunks (13 rows with jmax 6: 5+5+3, not 6+6+1 whose last
  // chunk would have too few independent FMA chains).
  const int64_t chunks = (nrows + jmax - 1) / jmax;
  const int64_t jn = chunks ? (nrows + chunks - 1) / chunks : 1;
  for (int64_t r = 0; r < nrows;) {
    const int64_t j = nrows - r < jn ? nrows - r : jn;
    const float* b = B + r * bstride;
    float* s = S + r * rowlen;
    switch (j) {
#define NHOOD_QK_CASE(n) \
  case n: if (n <= jmax) qk_tile<M, (n <= jmax ? n : 1), NB>(depth, A, lda, b, bstride, ldb, s, rowlen, lds); break;
      NHOOD_QK_CASE(1) NHOOD_QK_CASE(2) NHOOD_QK_CASE(3) NHOOD_QK_CASE(4) NHOOD_QK_CASE(5) NHOOD_QK_CASE(6)
#undef NHOOD_QK_CASE
      default: break;
    }
    r += j;
  }
}

template <int M>
void qk_m(int64_t nvb, int64_t nrows, int64_t depth, const float* A, int64_t lda, const float* B, int64_t bstride,
          int64_t ldb, float* S, int64_t rowlen, int64_t lds) {
  int64_t v = 0;
  if (2 * M <= kAcc)
    for (; v + 2 <= nvb; v += 2) qk_rows<M, 2>(nrows, depth, A, lda, B + v * W, bstride, ldb, S + v * W, rowlen, lds);
  for (; v < nvb; ++v) qk_rows<M, 1>(nrows, depth, A, lda, B + v * W, bstride, ldb, S + v * W, rowlen, lds);
}

void band_qk(int64_t m, int64_t nvb, int64_t nrows, int64_t depth, const float* A, int64_t lda, const float* B,
             int64_t bstride, int64_t ldb, float* S, int64_t rowlen, int64_t lds) {
  switch (m) {
#define NHOOD_M_CASE(n) \
  case n: qk_m<n>(nvb, nrows, depth, A, lda, B, bstride, ldb, S, rowlen, lds); break;
    NHOOD_M_CASE(1) NHOOD_M_CASE(2) NHOOD_M_CASE(3) NHOOD_M_CASE(4)
    NHOOD_M_CASE(5) NHOOD_M_CASE(6) NHOOD_M_CASE(7) NHOOD_M_CASE(8)
#undef NHOOD_M_CASE
    default: break;
  }
}

inline vf lane_index() {
  vf v;
  for (int l = 0; l < W; ++l) v[l] = float(l);
  return v;
}

// Horizontal max/sum as trees (a scalar chain over 16 lanes is ~60 cycles of
// latency on the softmax's critical path).
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#if NHOOD_VEC_FLOATS == 16
#define NHOOD_SWAP(v, s)                                                                                       \
  __builtin_shufflevector(v, v, 0 ^ s, 1 ^ s, 2 ^ s, 3 ^ s, 4 ^ s, 5 ^ s, 6 ^ s, 7 ^ s, 8 ^ s, 9 ^ s, 10 ^ s, \
                          11 ^ s, 12 ^ s, 13 ^ s, 14 ^ s, 15 ^ s)
#elif NHOOD_VEC_FLOATS == 8
#define NHOOD_SWAP(v, s) __builtin_shufflevector(v, v, 0 ^ s, 1 ^ s, 2 ^ s, 3 ^ s, 4 ^ s, 5 ^ s, 6 ^ s, 7 ^ s)
#elif NHOOD_VEC_FLOATS == 4
#define NHOOD_SWAP(v, s) __builtin_shufflevector(v, v, 0 ^ s, 1 ^ s, 2 ^ s, 3 ^ s)
#endif
#endif
// Max/sum over each aligned group of G lanes (G = W: the whole vector; G =
// W/2: each half, for the paired-query layout), valid in the group's first
// lane.
#ifdef NHOOD_SWAP
template <int G>
inline vf group_max(vf v) {
  if (G >= 16) { const vf u = NHOOD_SWAP(v, 8 % W); v = u > v ? u : v; }
  if (G >= 8) { const vf u = NHOOD_SWAP(v, 4 % W); v = u > v ? u : v; }
  if (G >= 4) { const vf u = NHOOD_SWAP(v, 2 % W); v = u > v ? u : v; }
  if (G >= 2) { const vf u = NHOOD_SWAP(v, 1); v = u > v ? u : v; }
  return v;
}
template <int G>
inline vf group_sum(vf v) {
  if (G >= 16) v += NHOOD_SWAP(v, 8 % W);
  if (G >= 8) v += NHOOD_SWAP(v, 4 % W);
  if (G >= 4) v += NHOOD_SWAP(v, 2 % W);
  if (G >= 2) v += NHOOD_SWAP(v, 1);
  return v;
}
#undef NHOOD_SWAP
#else
template <int G>
inline vf group_max(vf v) {
  for (int g = 0; g < W; g += G)
    for (int l = 1; l < G; ++l) v[g] = v[g + l] > v[g] ? v[g + l] : v[g];
  return v;
}
template <int G>
inline vf group_sum(vf v) {
  for (int g = 0; g < W; g += G) {
    float s = 0;
    for (int l = 0; l < G; ++l) s += v[g + l];
    v[g] = s;
  }
  return v;
}
#endif
inline float hmax(vf v) { return group_max<W>(v)[0]; }
inline float hsum(vf v) { return group_sum<W>(v)[0]; }

// Pieces shared by both band-group softmax layouts (softmax_m, softmaxq_m):
// the additional-token tail (the nt floats at S + i*lds + t0 of each query,
// lanes past nt ignored); finish_max turns softmax_m's running maxima into
// scalars.
template <int M>
inline void tail_max(const float* S, int64_t lds, int64_t t0, int64_t nt, vf* vm) {
  const vf ninf = splat(-__builtin_inff());
  const vf idx = lane_index();
  for (int64_t v = 0; v < nt; v += W) {
    const vf valid = (vf)(idx + float(v) < splat(float(nt)));
    for (int i = 0; i < M; ++i) {
      const vf x = load(S + i * lds + t0 + v);
      const vf y = (vi)valid ? x : ninf;
      vm[i] = y > vm[i] ? y : vm[i];
    }
  }
}

// max_out[i] = horizontal max of vm[i], splatted back into vm[i]; acc zeroed.
template <int M>
inline void finish_max(vf* vm, float* max_out, vf* acc) {
  for (int i = 0; i < M; ++i) {
    max_out[i] = hmax(vm[i]);
    vm[i] = splat(max_out[i]);
    acc[i] = vf{};
  }
}

// exp(x - max) over the tail (exactly 0 past nt), summed into acc.
template <int M>
inline void tail_exp(float* S, int64_t lds, int64_t t0, int64_t nt, const vf* vm, vf* acc) {
  const vf ninf = splat(-__builtin_inff());
  const vf idx = lane_index();
  for (int64_t v = 0; v < nt; v += W) {
    const vf valid = (vf)(idx + float(v) < splat(float(nt)));
    for (int i = 0; i < M; ++i) {
      float* p = S + i * lds + t0 + v;
      const vf e = vexp((vi)valid ? load(p) - vm[i] : ninf);
      store(p, e);
      acc[i] += e;
    }
  }
}

// Softmax numerators of the M queries of a band group, interleaved so their
// dependency chains (max, exp, sums) overlap. Query i: lanes [lo[i] - c0,
// hi[i] - c0) of its nrows rows (S + i*lds, rowlen floats apart) and the first
// nt floats after them (additional tokens). Writes exp(x - max) there and
// exactly 0 in every other lane (rows and the tail's last vector).
template <int M>
void softmax_m(float* S, int64_t lds, int64_t nrows, int64_t rowlen, const int64_t* lo, const int64_t* hi, int64_t c0,
               int64_t nt, float* max_out, float* sum_out) {
  const vf ninf = splat(-__builtin_inff());
  const vf idx = lane_index();
  vf vlo[M], vhi[M], vm[M];
  for (int i = 0; i < M; ++i) {
    vlo[i] = splat(float(lo[i] - c0));
    vhi[i] = splat(float(hi[i] - c0));
    vm[i] = ninf;
  }
  // Vector v of every row has the same lanes in each query's window: the
  // masks are made once per v, outside the row loop.
  vi mk[M];
  auto make_masks = [&](int64_t v) {
    const vf c = idx + float(v);
    for (int i = 0; i < M; ++i) mk[i] = (c >= vlo[i]) & (c < vhi[i]);
  };
  for (int64_t v = 0; v < rowlen; v += W) {
    make_masks(v);
    for (int64_t r = 0; r < nrows; ++r)
      for (int i = 0; i < M; ++i) {
        const vf y = mk[i] ? load(S + i * lds + r * rowlen + v) : ninf;
        vm[i] = y > vm[i] ? y : vm[i];
      }
  }
  const int64_t t0 = nrows * rowlen;
  tail_max<M>(S, lds, t0, nt, vm);
  vf acc[M];
  finish_max<M>(vm, max_out, acc);
  for (int64_t v = 0; v < rowlen; v += W) {
    make_masks(v);
    for (int64_t r = 0; r < nrows; ++r)
      for (int i = 0; i < M; ++i) {
        float* p = S + i * lds + r * rowlen + v;
        const vf e = vexp(mk[i] ? load(p) - vm[i] : ninf);
        store(p, e);
        acc[i] += e;
      }
  }
  tail_exp<M>(S, lds, t0, nt, vm, acc);
  for (int i = 0; i < M; ++i) sum_out[i] = hsum(acc[i]);
}

void band_softmax(int64_t m, float* S, int64_t lds, int64_t nrows, int64_t rowlen, const int64_t* lo,
                  const int64_t* hi, int64_t c0, int64_t nt, float* max_out, float* sum_out) {
  switch (m) {
#define NHOOD_M_CASE(n) \
  case n: softmax_m<n>(S, lds, nrows, rowlen, lo, hi, c0, nt, max_out, sum_out); break;
    NHOOD_M_CASE(1) NHOOD_M_CASE(2) NHOOD_M_CASE(3) NHOOD_M_CASE(4)
    NHOOD_M_CASE(5) NHOOD_M_CASE(6) NHOOD_M_CASE(7) NHOOD_M_CASE(8)
#undef NHOOD_M_CASE
    default: break;
  }
}

// O[i][x] += sum_{r < nrows, w < bw} P[i*lds + r*rowlen + w] * V[r*vstride + w*ldv + x]
// for M queries and NV vectors of x: M*NV accumulators, per (r, w) NV loads
// of V and M broadcasts of P.
template <int M, int NV>
void pv_tile(int64_t nrows, int64_t bw, const float* P, int64_t rowlen, int64_t lds, const float* V, int64_t vstride,
             int64_t ldv, float* O, int64_t ldo) {
  // Fewer than 8 accumulators (e.g. 2 queries x 2 vectors for d = 32) would
  // be latency-bound: then even and odd columns w go to separate sets.
  constexpr int NS = M * NV <= 4 ? 2 : 1;
  vf acc[NS][M][NV];
  for (int i = 0; i < M; ++i)
    for (int v = 0; v < NV; ++v) {
      acc[0][i][v] = load(O + i * ldo + v * W);
      if (NS > 1) acc[NS - 1][i][v] = vf{};
    }
  for (int64_t r = 0; r < nrows; ++r) {
    const float* vr = V + r * vstride;
    const float* pr = P + r * rowlen;
    int64_t w = 0;
    for (; w + NS <= bw; w += NS)
      for (int k = 0; k < NS; ++k) {
        vf b[NV];
        for (int v = 0; v < NV; ++v) b[v] = load_once(vr + (w + k) * ldv + v * W);
        for (int i = 0; i < M; ++i) {
          const vf p = splat(pr[i * lds + w + k]);
          for (int v = 0; v < NV; ++v) acc[k][i][v] += p * b[v];
        }
      }
    for (; w < bw; ++w) {
      vf b[NV];
      for (int v = 0; v < NV; ++v) b[v] = load_once(vr + w * ldv + v * W);
      for (int i = 0; i < M; ++i) {
        const vf p = splat(pr[i * lds + w]);
        for (int v = 0; v < NV; ++v) acc[0][i][v] += p * b[v];
      }
    }
  }
  for (int i = 0; i < M; ++i)
    for (int v = 0; v < NV; ++v) store(O + i * ldo + v * W, NS > 1 ? acc[0][i][v] + acc[NS - 1][i][v] : acc[0][i][v]);
}

template <int M>
void pv_m(int64_t nrows, int64_t bw, const float* P, int64_t rowlen, int64_t lds, const float* V, int64_t vstride,
          int64_t ldv, float* O, int64_t ldo, int64_t width) {
  constexpr int nvmax = kAcc / M < 1 ? 1 : (kAcc / M > 4 ? 4 : kAcc / M);
  const int64_t nv = width / W;
  const int64_t chunks = (nv + nvmax - 1) / nvmax;
  const int64_t cn = (nv + chunks - 1) / chunks;
  for (int64_t x = 0; x < nv;) {
    const int64_t c = nv - x < cn ? nv - x : cn;
    const float* v = V + x * W;
    float* o = O + x * W;
    switch (c) {
#define NHOOD_PV_CASE(n) \
  case n: if (n <= nvmax) pv_tile<M, (n <= nvmax ? n : 1)>(nrows, bw, P, rowlen, lds, v, vstride, ldv, o, ldo); break;
      NHOOD_PV_CASE(1) NHOOD_PV_CASE(2) NHOOD_PV_CASE(3) NHOOD_PV_CASE(4)
#undef NHOOD_PV_CASE
      default: break;
    }
    x += c;
  }
}

void band_pv(int64_t m, int64_t nrows, int64_t bw, const float* P, int64_t rowlen, int64_t lds, const float* V,
             int64_t vstride, int64_t ldv, float* O, int64_t ldo, int64_t width) {
  switch (m) {
#define NHOOD_M_CASE(n) \
  case n: pv_m<n>(nrows, bw, P, rowlen, lds, V, vstride, ldv, O, ldo, width); break;
    NHOOD_M_CASE(1) NHOOD_M_CASE(2) NHOOD_M_CASE(3) NHOOD_M_CASE(4)
    NHOOD_M_CASE(5) NHOOD_M_CASE(6) NHOOD_M_CASE(7) NHOOD_M_CASE(8)
#undef NHOOD_M_CASE
    default: break;
  }
}

// ---- paired queries (forward, narrow bands) -------------------------------
// When the union of two consecutive queries' z windows is at most H = W/2
// columns (7-wide windows on AVX-512, 3-wide on AVX2), one vector holds both
// queries' logits of one key row: lanes [0, H) query i0, lanes [H, W) query
// i0+1, column c0 + l % H, i.e. S[r*W + l], then each query's nt
// additional-token floats at S + nrows*W + i*ldt. Per depth step a key row
// is one H-float broadcast load and one full-width FMA for both queries; the
// query side is two scalar broadcasts merged under a mask. (The earlier
// paired-row layout, two key rows of one query per vector, needed two half
// loads and a join per vector and one broadcast per query: load- and
// shuffle-bound, llvm-mca 7.1 cycles per depth step for 7 rows vs 5.8.)
// band_pv reads this layout as 2 queries with lds = H, rowlen = W. A group
// of one query (odd segment end) leaves the upper half unused (P = 0).
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#if NHOOD_VEC_FLOATS == 16
#define NHOOD_PAIRED 1
#define NHOOD_JOIN(a, b) __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
#elif NHOOD_VEC_FLOATS == 8
#define NHOOD_PAIRED 1
#define NHOOD_JOIN(a, b) __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7)
#endif
#endif

#ifdef NHOOD_PAIRED
constexpr int H = W / 2;
typedef float vh __attribute__((vector_size(H * 4)));
inline vh load_half(const float* p) { vh x; __builtin_memcpy(&x, p, sizeof x); return x; }
// H floats at p in both halves. One broadcast load (vbroadcastf64x4 /
// vbroadcastf128) through intrinsics: GCC lowers the vector-extension
// shuffle to a load plus a shuffle-port uop per key row and depth step.
#if NHOOD_VEC_FLOATS == 16 && defined(__AVX512F__)
inline vf load_dup(const float* p) {
  // maskz with a full mask: the unmasked intrinsic's undefined passthrough
  // trips -Wmaybe-uninitialized in GCC 12's header.
  const __m256d x = _mm256_loadu_pd(reinterpret_cast<const double*>(p));
  return (vf)_mm512_castpd_ps(_mm512_maskz_broadcast_f64x4(0xFF, x));
}
#elif NHOOD_VEC_FLOATS == 8 && defined(__AVX__)
inline vf load_dup(const float* p) {
  const __m128 x = _mm_loadu_ps(p);
  return (vf)_mm256_set_m128(x, x);
}
#else
inline vf load_dup(const float* p) { const vh x = load_half(p); return NHOOD_JOIN(x, x); }
#endif
inline vi lower_half() { return lane_index() < splat(float(H)); }

// Independent accumulator sets (over depth steps) so that J key rows give
// about 8 FMA chains, within the register budget.
constexpr int qkq_sets(int J) {
  int ns = J >= 8 ? 1 : J >= 4 ? 2 : 4;
  while (ns > 1 && ns * J > kAcc) ns /= 2;
  return ns;
}

// Key rows r < J of a query pair (A0, A1): S[r*W + l]. Per depth step the
// query side is {A0[d] x H, A1[d] x H} (two broadcasts merged by a mask),
// the key side one broadcast load per row.
template <int J>
void qkq_tile(int64_t depth, const float* A0, const float* A1, const float* B, int64_t bstride, int64_t ldb,
              float* S) {
  constexpr int NS = qkq_sets(J);
  vf acc[NS][J];
  for (int k = 0; k < NS; ++k)
    for (int j = 0; j < J; ++j) acc[k][j] = vf{};
  const vi lower = lower_half();
  int64_t d = 0;
  for (; d + NS <= depth; d += NS)
    for (int k = 0; k < NS; ++k) {
      const vf a = lower ? splat(A0[d + k]) : splat(A1[d + k]);
      for (int j = 0; j < J; ++j) acc[k][j] += a * load_dup(B + j * bstride + (d + k) * ldb);
    }
  for (; d < depth; ++d) {
    const vf a = lower ? splat(A0[d]) : splat(A1[d]);
    for (int j = 0; j < J; ++j) acc[0][j] += a * load_dup(B + j * bstride + d * ldb);
  }
  for (int j = 0; j < J; ++j) {
    vf s = acc[0][j];
    for (int k = 1; k < NS; ++k) s += acc[k][j];
    store(S + j * W, s);
  }
}

// QK^T of m (1 or 2) queries at A (rows lda apart) against key rows
// B + r*bstride (depth rows ldb apart), r < nrows.
void band_qkq(int64_t m, int64_t nrows, int64_t depth, const float* A, int64_t lda, const float* B, int64_t bstride,
              int64_t ldb, float* S) {
  const float* A1 = m > 1 ? A + lda : A;
  constexpr int jmax = 8;
  const int64_t chunks = (nrows + jmax - 1) / jmax, jn = chunks ? (nrows + chunks - 1) / chunks : 1;
  for (int64_t r = 0; r < nrows;) {
    const int64_t j = nrows - r < jn ? nrows - r : jn;
    const float* b = B + r * bstride;
    float* s = S + r * W;
    switch (j) {
#define NHOOD_QKQ_CASE(n) \
  case n: qkq_tile<n>(depth, A, A1, b, bstride, ldb, s); break;
      NHOOD_QKQ_CASE(1) NHOOD_QKQ_CASE(2) NHOOD_QKQ_CASE(3) NHOOD_QKQ_CASE(4)
      NHOOD_QKQ_CASE(5) NHOOD_QKQ_CASE(6) NHOOD_QKQ_CASE(7) NHOOD_QKQ_CASE(8)
#undef NHOOD_QKQ_CASE
      default: break;
    }
    r += j;
  }
}

// Softmax numerators of a query pair in the layout above: query i's lanes
// of every key row, masked to its window [lo[i], hi[i]), and its tail.
template <int M>
void softmaxq_m(float* S, int64_t nrows, const int64_t* lo, const int64_t* hi, int64_t c0, int64_t nt, int64_t ldt,
                float* max_out, float* sum_out) {
  const vf ninf = splat(-__builtin_inff());
  const vi lower = lower_half();
  vf col;
  for (int l = 0; l < W; ++l) col[l] = float(l % H);
  // With M = 1 the upper half's window is empty.
  const float lo1 = M > 1 ? float(lo[M - 1] - c0) : 0.0f, hi1 = M > 1 ? float(hi[M - 1] - c0) : 0.0f;
  const vi mk = (col >= (lower ? splat(float(lo[0] - c0)) : splat(lo1))) &
                (col < (lower ? splat(float(hi[0] - c0)) : splat(hi1)));
  vf vm = ninf;
  for (int64_t r = 0; r < nrows; ++r) {
    const vf y = mk ? load(S + r * W) : ninf;
    vm = y > vm ? y : vm;
  }
  float* T = S + nrows * W;
  vf tm[M], tacc[M];
  for (int i = 0; i < M; ++i) tm[i] = ninf;
  tail_max<M>(T, ldt, 0, nt, tm);
  vm = group_max<H>(vm);
  for (int i = 0; i < M; ++i) {
    const float b = vm[i * H], t = hmax(tm[i]);
    max_out[i] = t > b ? t : b;
    tm[i] = splat(max_out[i]);
    tacc[i] = vf{};
  }
  const vf shift = lower ? tm[0] : tm[M - 1];
  vf acc = vf{};
  for (int64_t r = 0; r < nrows; ++r) {
    float* p = S + r * W;
    const vf e = vexp(mk ? load(p) - shift : ninf);
    store(p, e);
    acc += e;
  }
  tail_exp<M>(T, ldt, 0, nt, tm, tacc);
  acc = group_sum<H>(acc);
  for (int i = 0; i < M; ++i) sum_out[i] = acc[i * H] + hsum(tacc[i]);
}

void band_softmaxq(int64_t m, float* S, int64_t nrows, const int64_t* lo, const int64_t* hi, int64_t c0, int64_t nt,
                   int64_t ldt, float* max_out, float* sum_out) {
  if (m == 1)
    softmaxq_m<1>(S, nrows, lo, hi, c0, nt, ldt, max_out, sum_out);
  else
    softmaxq_m<2>(S, nrows, lo, hi, c0, nt, ldt, max_out, sum_out);
}
#undef NHOOD_JOIN
#endif  // NHOOD_PAIRED

// dst[c*ldd + r] = src[r*lds + c] for r < rows, c < cols, zeros up to ldd
// (packing K transposed). 4x4 blocks through 4-float vectors: 8 shuffles and 4+4 vector
// moves per 16 elements instead of 16 scalar loads and stores.
typedef float v4 __attribute__((vector_size(16)));
void transpose(const float* src, int64_t lds, int64_t rows, int64_t cols, float* dst, int64_t ldd) {
  int64_t r = 0;
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
  for (; r + 4 <= rows; r += 4) {
    int64_t c = 0;
    for (; c + 4 <= cols; c += 4) {
      v4 a, b, e, f;
      __builtin_memcpy(&a, src + r * lds + c, 16);
      __builtin_memcpy(&b, src + (r + 1) * lds + c, 16);
      __builtin_memcpy(&e, src + (r + 2) * lds + c, 16);
      __builtin_memcpy(&f, src + (r + 3) * lds + c, 16);
      const v4 t0 = __builtin_shufflevector(a, b, 0, 4, 1, 5), t1 = __builtin_shufflevector(a, b, 2, 6, 3, 7);
      const v4 t2 = __builtin_shufflevector(e, f, 0, 4, 1, 5), t3 = __builtin_shufflevector(e, f, 2, 6, 3, 7);
      const v4 o0 = __builtin_shufflevector(t0, t2, 0, 1, 4, 5), o1 = __builtin_shufflevector(t0, t2, 2, 3, 6, 7);
      const v4 o2 = __builtin_shufflevector(t1, t3, 0, 1, 4, 5), o3 = __builtin_shufflevector(t1, t3, 2, 3, 6, 7);
      __builtin_memcpy(dst + c * ldd + r, &o0, 16);
      __builtin_memcpy(dst + (c + 1) * ldd + r, &o1, 16);
      __builtin_memcpy(dst + (c + 2) * ldd + r, &o2, 16);
      __builtin_memcpy(dst + (c + 3) * ldd + r, &o3, 16);
    }
    for (; c < cols; ++c)
      for (int64_t k = 0; k < 4; ++k) dst[c * ldd + r + k] = src[(r + k) * lds + c];
  }
#endif
  for (; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * ldd + r] = src[r * lds + c];
  // Zero padding by whole vectors (the last one overlapping): a scalar loop
  // here became one memset call per row (~2% of a small forward).
  for (int64_t c = 0; c < cols; ++c) {
    float* d = dst + c * ldd;
    for (r = rows; r + W <= ldd; r += W) store(d + r, vf{});
    if (r < ldd) store(d + ldd - W, vf{});
  }
}

}  // namespace

#define NHOOD_STR2(x) #x
#define NHOOD_STR(x) NHOOD_STR2(x)
#ifdef NHOOD_PAIRED
#undef NHOOD_PAIRED
const KernelTable table = {NHOOD_STR(NHOOD_KERNEL_NS), W, gemm_nt, gemm_nt_blocks, combine, axpy, exp_sum,
                           band_qk, band_softmax, band_pv, transpose, band_qkq, band_softmaxq};
#else
const KernelTable table = {NHOOD_STR(NHOOD_KERNEL_NS), W, gemm_nt, gemm_nt_blocks, combine, axpy, exp_sum,
                           band_qk, band_softmax, band_pv, transpose, nullptr, nullptr};
#endif

}  // namespace nhood::cpu::fused::NHOOD_KERNEL_NS
