// Walking a block's (inverse-)neighborhood box tile by tile, and the masks
// of the tiles that are not inside every row's window. Shared by the fused
// (mma.sync) and hopper (wgmma) kernels: their accumulator fragments place
// columns alike (column 8n + 2 (lane % 4) + e of a row holds value 2n + e).
#pragma once

#include "../common/smem.cuh"
#include "fused.cuh"

namespace nhood::fused {

// Walks the spatial inner tiles of a KvWalk box in order (z fastest),
// wrapping to the first after the last (the dK/dV pass walks the box once
// per query head), without KvWalk::origin's divisions.
struct TileCursor {
  int i[3] = {0, 0, 0};
  // Starts a forward walk at the box's tile holding the first multiple of
  // 2^geo.walk_shift[a] along each axis (a power of two no larger than the
  // window, so every box holds one), and returns that tile's origin: CTAs
  // whose boxes overlap then load the same tiles first, not one each (the
  // 1-D anchor's 132 CTAs began with 8.4 MB of distinct K and V reads, from
  // device memory when L2 is cold). Needs only the block's first row's
  // window, so a producer can issue the first load before its KvWalk exists.
  __device__ __forceinline__ void start(const Params& p, const Geo& geo, const BlockTile& bt, int* j0) {
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      const int kb = int(window_in_group(p.axis[a], bt.p0[a], bt.lg[a]).begin);
      const int s = geo.walk_shift[a];
      const int anchor = ((kb + (1 << s) - 1) >> s) << s;
      i[a] = (anchor - kb) >> (__ffs(geo.u[a]) - 1);
      j0[a] = kb + i[a] * geo.u[a];
    }
  }
  __device__ __forceinline__ void origin(const Geo& geo, const KvWalk& kw, int* j0) const {
#pragma unroll
    for (int a = 0; a < 3; ++a) j0[a] = kw.kb[a] + i[a] * geo.u[a];
  }
  __device__ __forceinline__ void advance(const KvWalk& kw) {
    if (++i[2] < kw.nk[2]) return;
    i[2] = 0;
    if (++i[1] < kw.nk[1]) return;
    i[1] = 0;
    if (++i[0] == kw.nk[0]) i[0] = 0;
  }
};

// Masks of partial tiles by byte arithmetic. In an m64nN accumulator tile
// (wgmma), as in each m16nN row block of mma.sync, a thread holds N/4
// columns per row (column 8n + 2 (lane % 4) + e of value 2n + e); each
// column's token has a local coordinate c < 128 along every
// axis of the inner tile (shape geo.u). A table in shared memory holds
// 0x80 | c as bytes, four values per word, for each of the 4 lane patterns
// and each axis, built once per launch. For a row's range [lo, hi) along an
// axis (its window, or its inverse window in the dK/dV pass, relative to the
// tile origin and clamped to [0, 128]), (0x80 + c) - lo keeps its top bit
// iff c >= lo, with no borrow across bytes: two subtractions and one logic
// op test four columns, where a compare and a select per column did.
template <int N>
struct MaskTable {
  static constexpr int kWords = N / 16;  // per (lane pattern, axis)
  static constexpr int kBytes = 4 * 3 * kWords * 4;

  // Axes unrolled: a run-time index into geo would put it in local memory.
  // Built by `threads` threads, of which this is `thread`.
  static __device__ void build(uint32_t* table, const Geo& geo, int thread = threadIdx.x, int threads = blockDim.x) {
    for (int i = thread; i < 4 * kWords; i += threads) {
      const int w = i % kWords, l = i / kWords;
#pragma unroll
      for (int a = 0; a < 3; ++a) {
        uint32_t word = 0;
#pragma unroll
        for (int b = 0; b < 4; ++b) {
          const int v = 4 * w + b;  // value 2n + e
          const int col = 8 * (v / 2) + 2 * l + v % 2;
          word |= (0x80u | uint32_t((col >> geo.ush[a]) & (geo.u[a] - 1))) << (8 * b);
        }
        table[(3 * l + a) * kWords + w] = word;
      }
    }
  }

  // This thread's keep words: bit 7 of byte b of keep[r][w] is set where
  // value 4w + b (= 2n + e) of row r lies inside the row's range
  // win[r][2a, 2a + 1) along every axis a flagged in `partial`; j0: the
  // tile's origin.
  static __device__ __forceinline__ void keep_bits(uint32_t (*keep)[kWords], const uint32_t* table, const int* j0,
                                                   const int (*win)[6], unsigned partial, int lane) {
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int w = 0; w < kWords; ++w) keep[r][w] = 0x80808080u;
    const uint32_t* t = table + (lane & 3) * 3 * kWords;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      if (!((partial >> a) & 1)) continue;
      uint32_t c[kWords];
      if constexpr (kWords % 4 == 0) {
#pragma unroll
        for (int w = 0; w < kWords; w += 4) *reinterpret_cast<uint4*>(c + w) = lds128(t + a * kWords + w);
      } else {
#pragma unroll
        for (int w = 0; w < kWords; w += 2) *reinterpret_cast<uint2*>(c + w) = lds64(t + a * kWords + w);
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const uint32_t lo = uint32_t(min(max(win[r][2 * a] - j0[a], 0), 128)) * 0x01010101u;
        const uint32_t hi = uint32_t(min(max(win[r][2 * a + 1] - j0[a], 0), 128)) * 0x01010101u;
#pragma unroll
        for (int w = 0; w < kWords; ++w) keep[r][w] &= (c[w] - lo) & ~(c[w] - hi);
      }
    }
  }

  // Sets this thread's entries s[4n + 2r + e] of its two rows r to -inf
  // where the column lies outside the row's range (keep_bits).
  static __device__ __forceinline__ void apply(float* s, const uint32_t* table, const int* j0, const int (*win)[6],
                                               unsigned partial, int lane) {
    uint32_t keep[2][kWords];
    keep_bits(keep, table, j0, win, partial, lane);
#pragma unroll
    for (int n = 0; n < N / 8; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int v = 2 * n + e;
          if (!((keep[r][v / 4] >> (8 * (v % 4) + 7)) & 1)) s[4 * n + 2 * r + e] = -INFINITY;
        }
  }

  // The same mask on 16-bit register A operands packed from such a tile
  // (hopper's pack_a: register j of k-step kk holds values 2n and 2n + 1 of
  // row j % 2, n = 2 kk + j / 2, the first in the low half): masked elements
  // become +0 whatever they held (inf and NaN included), one byte permute
  // (sign-replicating bit 7 of the two values' keep bytes over their halves)
  // and one AND per register, where masking the fp32 values took a test and
  // a select per value. The backward masks after its exponentials this way.
  static __device__ __forceinline__ void apply_packed(uint32_t (*a)[4], const uint32_t (*keep)[kWords]) {
#pragma unroll
    for (int kk = 0; kk < N / 16; ++kk)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int n = 2 * kk + j / 2;
        a[kk][j] &= prmt_sign(keep[j % 2][n / 2], (n % 2) ? 0xBBAAu : 0x9988u);
      }
  }
};

// Axes along which the inner tile at j0 is not inside every row's range
// [ib, ie) (the only ones that need a mask), as bits.
__device__ __forceinline__ unsigned partial_axes(const Geo& geo, const KvWalk& kw, const int* j0) {
  unsigned bits = 0;
#pragma unroll
  for (int a = 0; a < 3; ++a)
    if (j0[a] < kw.ib[a] || j0[a] + geo.u[a] > kw.ie[a]) bits |= 1u << a;
  return bits;
}

}  // namespace nhood::fused
