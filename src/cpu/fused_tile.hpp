// Tiling of the fused CPU backend: query tiles, their KV boxes, packing of the
// box into float32 buffers, and per-segment logits/softmax.
//
// A query tile is a box of consecutive positions of one dilation group per
// axis. Because window begin/end are monotone in the query position
// (window.hpp), the keys of all its queries form a box too (the KV box): the
// tile packs that box once (converting dtype) and reuses it for every query.
// Inside a tile, a *segment* is the run of queries along z at fixed (x, y):
// they share their x and y windows exactly, so their logits are a few dense
// blocks [queries x box-z columns], one per key row (x', y') of the window.
// Each query's z window is a contiguous column range [lo, hi) of each block,
// and groups of 4 consecutive queries are computed over the union of their
// ranges only, which keeps masked work small (a band, not the whole block).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <type_traits>
#include <vector>

#include "fused_kernels.hpp"
#include "grid.hpp"
#include "scalar.hpp"

namespace nhood::cpu::fused {

// Allocator for the packed float buffers: 64-byte aligned (a cache line, one
// AVX-512 vector), so rows padded to kPad floats start on a line and their
// vector loads never split two lines; resize() leaves new elements
// uninitialized (every user writes what it reads: no zero-fill pass).
template <typename T>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() = default;
  template <typename U>
  AlignedAllocator(const AlignedAllocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
  template <typename U>
  void construct(U* p) noexcept {  // default-initialization: no value for floats
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... A>
  void construct(U* p, A&&... a) {
    ::new (static_cast<void*>(p)) U(static_cast<A&&>(a)...);
  }
  template <typename U>
  bool operator==(const AlignedAllocator<U>&) const { return true; }
  template <typename U>
  bool operator!=(const AlignedAllocator<U>&) const { return false; }
};
using FloatBuf = std::vector<float, AlignedAllocator<float>>;

// Axes reordered so that unit axes come first: z is the innermost real axis,
// so segments run along it whatever the rank.
Params canonical(const Params& p);

// A query tile along one axis: dilation group g, group positions [p0, p0+count).
struct Span {
  int64_t g = 0, p0 = 0, count = 1;
};
std::vector<Span> axis_tiles(const AxisWindow& a, int64_t tile);

// Tile extents (queries per axis) before clipping to the group length. Taller
// tiles share more of the KV box (less halo to pack per query); for head dims
// up to 64 a 32x16 box with 13x13 windows still fits a 512 KiB L2 (3-6% on
// 64x64/d64/13x13 vs 16x16), larger head dims keep 16x16.
constexpr int64_t kTileX = 2, kTileZ = 16;
inline int64_t tile_y(const Params& p) { return p.head_dim + p.head_dim_v <= 128 ? 32 : 16; }

// Keys of a tile along one axis: group positions [begin, end) of group g.
struct BoxAxis {
  int64_t g = 0, step = 1, lg = 1, begin = 0, end = 1;
  int64_t size() const { return end - begin; }
  int64_t token(int64_t j) const { return g + step * (begin + j); }  // j-th key of the box
};

inline BoxAxis box_axis(const AxisWindow& a, const Span& s) {
  BoxAxis b;
  b.g = s.g;
  b.step = a.dilation;
  b.lg = group_length(a, s.g);
  b.begin = window_in_group(a, s.p0, b.lg).begin;
  b.end = window_in_group(a, s.p0 + s.count - 1, b.lg).end;
  return b;
}

// Row strides of the packed buffers.
struct Dims {
  int64_t d, dv, dpad, dvpad, nadd, apad;
  explicit Dims(const Params& p)
      : d(p.head_dim), dv(p.head_dim_v), dpad(pad_to(p.head_dim)), dvpad(pad_to(p.head_dim_v)),
        nadd(p.n_additional), apad(pad_to(p.n_additional)) {}
};

// Element to float without a detour through double (keeps the loops simple
// enough for the compiler to vectorize the float32 case).
inline float to_f(float x) { return x; }
inline float to_f(Half x) { return to_float(x); }
inline float to_f(BFloat16 x) { return to_float(x); }

// Writes one grid vector (n elements, stride sd) as float into dst[0:n],
// zeroing dst[n:npad] so kernels can run over whole vectors.
template <typename T>
inline void load_row(const T* src, int64_t sd, int64_t n, int64_t npad, float scale, float* dst) {
  if (sd == 1)
    for (int64_t i = 0; i < n; ++i) dst[i] = scale * to_f(src[i]);
  else
    for (int64_t i = 0; i < n; ++i) dst[i] = scale * to_f(src[i * sd]);
  for (int64_t i = n; i < npad; ++i) dst[i] = 0.0f;
}

// load_row without scaling that also reports non-finite values (inf/NaN:
// exponent bits all ones) among the n loaded, checked while the values are in
// registers (a separate scan of the packed box was ~2-3% of a forward).
template <typename T>
inline uint32_t load_row_checked(const T* src, int64_t sd, int64_t n, int64_t npad, float* dst) {
  uint32_t bad = 0;
  if (sd == 1)
    for (int64_t i = 0; i < n; ++i) {
      const float f = to_f(src[i]);
      uint32_t bits;
      std::memcpy(&bits, &f, sizeof bits);
      bad |= uint32_t((bits & 0x7f800000u) == 0x7f800000u);
      dst[i] = f;
    }
  else
    for (int64_t i = 0; i < n; ++i) {
      const float f = to_f(src[i * sd]);
      uint32_t bits;
      std::memcpy(&bits, &f, sizeof bits);
      bad |= uint32_t((bits & 0x7f800000u) == 0x7f800000u);
      dst[i] = f;
    }
  for (int64_t i = n; i < npad; ++i) dst[i] = 0.0f;
  return bad;
}

// Asks for the cache lines of n elements at p (unit stride) ahead of use.
template <typename T>
inline void prefetch_row(const T* p, int64_t n) {
  for (int64_t e = 0; e < n; e += int64_t(64 / sizeof(T))) __builtin_prefetch(p + e);
}

inline void from_f(float* p, float x) { *p = x; }
inline void from_f(Half* p, float x) { *p = to_half(x); }
inline void from_f(BFloat16* p, float x) { *p = to_bfloat16(x); }

template <typename T>
inline void store_row(T* dst, int64_t sd, int64_t n, const float* src, float scale) {
  if (sd == 1)
    for (int64_t i = 0; i < n; ++i) from_f(dst + i, scale * src[i]);
  else
    for (int64_t i = 0; i < n; ++i) from_f(dst + i * sd, scale * src[i]);
}

// The KV box of a tile, for one (batch, kv head), packed as float32.
//   rows[r][w][npad]      one vector per key: r = box row (x', y'), w = box z
//   cols[r][e][wpad]      transposed: element e of every key of row r
// Additional tokens are one more "row" of nadd keys every query attends.
struct Packed {
  int64_t nrows = 0, nz = 0, wpad = 0;
  bool rows_finite = true;  // grid key rows hold no inf/NaN (set when rows are packed)
  FloatBuf rows, cols, add_rows, add_cols, scratch;
  std::vector<const void*> src_rows_storage;

  template <typename T, typename Op, typename TokOp>
  void pack(const KernelTable& kt, const Op& o, const TokOp& add, int64_t n, bool want_rows, bool want_cols,
            const BoxAxis (&box)[3], int64_t b, int64_t h, int64_t nadd) {
    const int64_t npad = pad_to(n);
    nrows = box[0].size() * box[1].size();
    nz = box[2].size();
    wpad = pad_to(nz) + kPad;  // room for kernels to run a vector past the end
    const T* base = static_cast<const T*>(o.data);
    std::vector<const void*>& src_rows = src_rows_storage;
    src_rows.resize(size_t(nrows));
    for (int64_t ix = 0; ix < box[0].size(); ++ix)
      for (int64_t iy = 0; iy < box[1].size(); ++iy)
        src_rows[size_t(ix * box[1].size() + iy)] =
            base + offset(o, b, box[0].token(ix), box[1].token(iy), box[2].token(0), h);
    const int64_t step = o.sz * box[2].step;
    if constexpr (std::is_same<T, float>::value) {
      if (want_cols && !want_rows && o.sd == 1) {
        // float32 keys need no conversion: transposed straight from the
        // tensor, without the row copy through scratch (one pass and a
        // box-sized buffer less in L2), the next box row prefetched.
        auto prefetch_box_row = [&](int64_t r) {
          for (int64_t w = 0; w < nz; ++w) prefetch_row(static_cast<const T*>(src_rows[size_t(r)]) + w * step, n);
        };
        cols.resize(size_t(nrows * n * wpad));
        prefetch_box_row(0);
        for (int64_t r = 0; r < nrows; ++r) {
          if (r + 1 < nrows) prefetch_box_row(r + 1);
          kt.transpose(static_cast<const T*>(src_rows[size_t(r)]), step, nz, n, cols.data() + r * n * wpad, wpad);
        }
        rows_finite = true;  // not checked: only value rows need it
        pack_additional<T>(add, n, npad, want_cols, b, h, nadd);
        return;
      }
    }
    // Otherwise rows first (contiguous reads of the source), then the
    // transpose from that L1/L2-resident copy: sequential writes, short
    // strided reads.
    FloatBuf& rbuf = want_rows ? rows : scratch;
    rbuf.resize(size_t(nrows * nz * npad));
    // Keys along z are one token stride apart (often kilobytes), a pattern the
    // hardware prefetcher does not follow: ask for the key kAhead positions
    // ahead in packing order, across box rows: box row ar, column aw, kept
    // incrementally (a division per key was ~1% of a small forward).
    constexpr int64_t kAhead = 6;
    int64_t ar = kAhead / nz, aw = kAhead % nz;
    uint32_t bad = 0;
    for (int64_t r = 0; r < nrows; ++r)
      for (int64_t w = 0; w < nz; ++w) {
        if (ar < nrows && o.sd == 1) prefetch_row(static_cast<const T*>(src_rows[size_t(ar)]) + aw * step, n);
        if (++aw == nz) {
          aw = 0;
          ++ar;
        }
        const T* src = static_cast<const T*>(src_rows[size_t(r)]) + w * step;
        float* dst = rbuf.data() + (r * nz + w) * npad;
        if (want_rows)
          bad |= load_row_checked(src, o.sd, n, npad, dst);
        else
          load_row(src, o.sd, n, npad, 1.0f, dst);
      }
    rows_finite = bad == 0;
    if (want_cols) {
      cols.resize(size_t(nrows * n * wpad));
      for (int64_t r = 0; r < nrows; ++r) {
        float* c = cols.data() + r * n * wpad;
        kt.transpose(rbuf.data() + r * nz * npad, npad, nz, n, c, wpad);
      }
    }
    pack_additional<T>(add, n, npad, want_cols, b, h, nadd);
  }

  // Additional tokens: one more "row" of nadd keys.
  template <typename T, typename TokOp>
  void pack_additional(const TokOp& add, int64_t n, int64_t npad, bool want_cols, int64_t b, int64_t h, int64_t nadd) {
    if (nadd == 0) return;
    const int64_t apad = pad_to(nadd) + kPad;
    const T* abase = static_cast<const T*>(add.data);
    add_rows.resize(size_t(nadd * npad));
    if (want_cols) add_cols.assign(size_t(n * apad), 0.0f);
    for (int64_t a = 0; a < nadd; ++a) {
      float* dst = add_rows.data() + a * npad;
      load_row(abase + offset(add, b, a, h), add.sd, n, npad, 1.0f, dst);
      if (want_cols)
        for (int64_t e = 0; e < n; ++e) add_cols[size_t(e * apad + a)] = dst[e];
    }
  }
};

// The queries of one segment and the key rows/columns they attend.
struct Segment {
  int64_t m = 0;                 // queries (consecutive group positions along z)
  int64_t rx0 = 0, rx1 = 0;      // x window, as box row indices
  int64_t ry0 = 0, ry1 = 0;      // y window
  int64_t ny = 1;                // box rows per box x (= box y size)
  std::vector<int64_t> lo, hi;   // per query: z window as box columns
  int64_t nrows() const { return (rx1 - rx0) * (ry1 - ry0); }
  int64_t box_row(int64_t rr) const {
    const int64_t nyw = ry1 - ry0;
    return (rx0 + rr / nyw) * ny + ry0 + rr % nyw;
  }
};

inline void make_segment(const Params& p, const Span (&s)[3], const BoxAxis (&box)[3], int64_t px, int64_t py,
                         Segment& seg) {
  const IndexRange wx = window_in_group(p.axis[0], px, box[0].lg);
  const IndexRange wy = window_in_group(p.axis[1], py, box[1].lg);
  seg.rx0 = wx.begin - box[0].begin;
  seg.rx1 = wx.end - box[0].begin;
  seg.ry0 = wy.begin - box[1].begin;
  seg.ry1 = wy.end - box[1].begin;
  seg.ny = box[1].size();
  seg.m = s[2].count;
  seg.lo.resize(size_t(seg.m));
  seg.hi.resize(size_t(seg.m));
  for (int64_t i = 0; i < seg.m; ++i) {
    const IndexRange wz = window_in_group(p.axis[2], s[2].p0 + i, box[2].lg);
    seg.lo[size_t(i)] = wz.begin - box[2].begin;
    seg.hi[size_t(i)] = wz.end - box[2].begin;
  }
}

// Logit buffer layout of a segment: per query, one block of wpad columns per
// key row, then the additional tokens.
inline int64_t logits_stride(const Segment& seg, const Packed& kv, const Dims& dims) {
  return seg.nrows() * kv.wpad + (dims.nadd ? pad_to(dims.nadd) + kPad : 0);
}

// S[i][...] = A_i . key for every key query i attends (plus neighbors in the
// band). A: [m][apad] packed query-side rows; kv.cols: transposed keys.
inline void band_logits(const KernelTable& kt, const Segment& seg, const Packed& kv, int64_t depth, const float* A,
                        int64_t lda, int64_t nadd, float* S, int64_t lds) {
  // Narrow windows: pairs of queries whose band fits one vector, all key rows
  // of one x' at once (gemm_nt_blocks); otherwise 4 queries per band.
  bool narrow = true;
  for (int64_t i0 = 0; i0 + 1 < seg.m && narrow; i0 += 2)
    narrow = seg.hi[size_t(i0 + 1)] - seg.lo[size_t(i0)] <= kt.vec;
  if (narrow) {
    const int64_t nyw = seg.ry1 - seg.ry0;
    for (int64_t rr0 = 0; rr0 < seg.nrows(); rr0 += nyw) {
      const float* cols = kv.cols.data() + seg.box_row(rr0) * depth * kv.wpad;
      for (int64_t i0 = 0; i0 < seg.m; i0 += 2) {
        const int64_t mb = seg.m - i0 < 2 ? seg.m - i0 : 2;
        const int64_t c0 = seg.lo[size_t(i0)], c1 = seg.hi[size_t(i0 + mb - 1)];
        kt.gemm_nt_blocks(mb, nyw, c1 - c0, depth, A + i0 * lda, lda, cols + c0, depth * kv.wpad, kv.wpad,
                          S + i0 * lds + rr0 * kv.wpad + c0, kv.wpad, lds);
      }
    }
  } else {
    for (int64_t rr = 0; rr < seg.nrows(); ++rr) {
      const float* cols = kv.cols.data() + seg.box_row(rr) * depth * kv.wpad;
      for (int64_t i0 = 0; i0 < seg.m; i0 += 4) {
        const int64_t mb = seg.m - i0 < 4 ? seg.m - i0 : 4;
        const int64_t c0 = seg.lo[size_t(i0)], c1 = seg.hi[size_t(i0 + mb - 1)];
        kt.gemm_nt(mb, c1 - c0, depth, A + i0 * lda, lda, cols + c0, kv.wpad, S + i0 * lds + rr * kv.wpad + c0, lds);
      }
    }
  }
  if (nadd)
    kt.gemm_nt(seg.m, nadd, depth, A, lda, kv.add_cols.data(), pad_to(nadd) + kPad, S + seg.nrows() * kv.wpad, lds);
}

// Forward band groups: a segment's queries are taken M at a time; a group
// computes logits over the union [c0, c0 + bw) of its members' z windows
// (nvb = ceil(bw / vec) vectors per key row) and uses them in that layout for
// the softmax and P.V (kernels band_qk, band_softmax, band_pv). Per query and
// key row, QK^T costs depth * nvb vector FMAs whatever M, P.V costs bw * dv /
// vec: larger groups waste P.V work on columns outside a query's window. But
// QK^T with M < 4 is load-bound (per depth step several unaligned key-vector
// loads feed only M FMAs each; measured 1.6x slower at M = 2 for 13x13/d64 on
// AVX-512; on 8-float vectors a single-vector band with M = 2 is fine, the
// old narrow path), and P.V with fewer than 8 accumulators (M * dv vectors) is
// latency-bound. M minimizes that estimate over the whole segment (ties:
// smaller M). Measured choices: 16-float vectors 7x7/d32 and 13x13/d64: M = 4;
// 8-float vectors 7x7/d32: M = 2 (one vector of 8 columns), 13x13/d64: M = 4.
inline int64_t band_group_size(const KernelTable& kt, const Segment& seg, int64_t depth, int64_t dvpad) {
  const int64_t mmax = kt.vec >= 16 ? 8 : 4, nv = dvpad / kt.vec;
  int64_t best = 1;
  double best_cost = -1;
  for (int64_t M = 1; M <= mmax && M <= seg.m; ++M) {
    const int64_t chains = M * (nv < 4 ? nv : 4);
    const double pv_slow = chains >= 8 ? 1.0 : 8.0 / double(chains);
    double cost = 0;
    for (int64_t i0 = 0; i0 < seg.m; i0 += M) {
      const int64_t mb = seg.m - i0 < M ? seg.m - i0 : M;
      const int64_t bw = seg.hi[size_t(i0 + mb - 1)] - seg.lo[size_t(i0)], nvb = (bw + kt.vec - 1) / kt.vec;
      const double qk_slow = M >= 4 || (nvb == 1 && kt.vec <= 8) ? 1.0 : 4.0 / double(M);
      cost += double(mb) * (double(depth * nvb * kt.vec) * qk_slow + double(dvpad * bw) * pv_slow);
    }
    if (best_cost < 0 || cost < best_cost * (1 - 1e-9)) {
      best = M;
      best_cost = cost;
    }
  }
  return best;
}

// Copies query i's attended entries of its logits row `s` into dst, in key
// order (window rows, then additional tokens): the softmax and the kernels
// then run over one contiguous array (one vectorized exp call per query).
inline int64_t gather_row(const Segment& seg, int64_t i, int64_t wpad, int64_t nadd, const float* s, float* dst) {
  const int64_t lo = seg.lo[size_t(i)], hi = seg.hi[size_t(i)], nr = seg.nrows();
  int64_t n = 0;
  for (int64_t rr = 0; rr < nr; ++rr)
    for (int64_t w = lo; w < hi; ++w) dst[n++] = s[rr * wpad + w];
  for (int64_t a = 0; a < nadd; ++a) dst[n++] = s[nr * wpad + a];
  return n;
}

// Unnormalized softmax in place: x[j] = exp(x[j] - max). Returns {max, sum}.
struct SoftmaxStats {
  float max, sum;
  float lse() const { return max + std::log(sum); }
};
inline SoftmaxStats softmax_unnormalized(const KernelTable& kt, float* x, int64_t n) {
  SoftmaxStats st;
  st.sum = kt.exp_sum(x, n, &st.max);
  return st;
}

// out[0:width] += sum over attended keys of c[j] * key_row (forward P.V,
// backward dS.K), c compact as made by gather_row; `kv.rows` have stride width.
inline void combine_row(const KernelTable& kt, const Segment& seg, int64_t i, const Packed& kv, int64_t width,
                        int64_t nadd, const float* c, float* out) {
  const int64_t lo = seg.lo[size_t(i)], hi = seg.hi[size_t(i)];
  for (int64_t rr = 0; rr < seg.nrows(); ++rr)
    kt.combine(hi - lo, c + rr * (hi - lo), kv.rows.data() + (seg.box_row(rr) * kv.nz + lo) * width, width, out,
               width);
  if (nadd) kt.combine(nadd, c + seg.nrows() * (hi - lo), kv.add_rows.data(), width, out, width);
}

}  // namespace nhood::cpu::fused
