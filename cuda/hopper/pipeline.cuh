// Pieces shared by the hopper kernels (forward.cuh, backward.cuh): the work
// item order of the persistent grid, TMA box loads at block-tile
// coordinates, the ring of shared-memory stages, and the register-level
// softmax helpers (masks, exp2, tree reductions).
#pragma once

#include <cuda.h>

#include <cmath>

#include "../fused/fused.cuh"
#include "ptx.cuh"

namespace nhood::hopper {

using detail::Params;
using fused::BlockTile;
using fused::Geo;
using fused::KvWalk;

// Work item -> (tile, head, batch); tiles vary fastest so concurrently
// running CTAs share KV halos in L2.
struct Item {
  int tile, h, b;
  __device__ Item(int item, int n_tiles, int heads) {
    tile = item % n_tiles;
    h = (item / n_tiles) % heads;
    b = item / (n_tiles * heads);
  }
};

// The persistent grid's loop: this CTA's work items in order, each with its
// block tile; items whose tile is empty are skipped alike by every role, so
// producers and consumers stay in step. f(w, bt).
template <class F>
__device__ __forceinline__ void for_each_item(const Params& p, const Geo& geo, int n_items, int n_tiles, int heads,
                                              F&& f) {
  for (int item = blockIdx.x; item < n_items; item += gridDim.x) {
    const Item w(item, n_tiles, heads);
    BlockTile bt;
    if (bt.init(p, geo, w.tile)) f(w, bt);
  }
}

__device__ __forceinline__ int coord(const Params& p, const BlockTile& bt, int axis, int pos) {
  return bt.g[axis] + p.axis[axis].dilation * pos;
}

// TMA load of one head's rows (columns [col, col + 64 * PANELS)) for the box
// of tokens whose first group position is pos0, in the dilation group of
// bt; one 128-byte-swizzled panel of `panel_bytes` per 64 columns.
template <int PANELS>
__device__ __forceinline__ void load_box(unsigned char* dst, const CUtensorMap* map, uint64_t* bar, int col,
                                         const Params& p, const BlockTile& bt, const int* pos0, int b,
                                         int panel_bytes) {
#pragma unroll
  for (int c = 0; c < PANELS; ++c)
    tma_load_5d(dst + c * panel_bytes, map, bar, col + 64 * c, coord(p, bt, 2, pos0[2]), coord(p, bt, 1, pos0[1]),
                coord(p, bt, 0, pos0[0]), b);
}

// Walks the spatial inner tiles of a KvWalk box in order (z fastest),
// wrapping to the first after the last (the dK/dV pass walks the box once
// per query head), without KvWalk::origin's divisions.
struct TileCursor {
  int i[3] = {0, 0, 0};
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

// Position in a ring of shared-memory stages.
template <int kStages>
struct Ring {
  int stage = 0;
  uint32_t phase = 0;
  __device__ void advance() {
    if (++stage == kStages) stage = 0, phase ^= 1;
  }
};

// Pairwise reduction of N (a power of two) registers: depth log2(N) instead
// of an N-long dependent chain. Compile-time strides keep t in registers.
template <int N, class Op>
__device__ __forceinline__ float tree_reduce(float* t, Op op) {
  if constexpr (N == 1) {
    return t[0];
  } else {
#pragma unroll
    for (int n = 0; n < N / 2; ++n) t[n] = op(t[n], t[n + N / 2]);
    return tree_reduce<N / 2>(t, op);
  }
}

// exp2 on the SFU; inputs are <= 0 (or -inf) here.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Masks of partial tiles by byte arithmetic. In an m64nN accumulator tile a
// thread holds N/4 columns per row (column 8n + 2 (lane % 4) + e of value
// 2n + e); each column's token has a local coordinate c < 128 along every
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

  static __device__ void build(uint32_t* table, const Geo& geo) {
    for (int i = threadIdx.x; i < 4 * 3 * kWords; i += blockDim.x) {
      const int w = i % kWords, a = (i / kWords) % 3, l = i / (3 * kWords);
      uint32_t word = 0;
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        const int v = 4 * w + b;  // value 2n + e
        const int col = 8 * (v / 2) + 2 * l + v % 2;
        word |= (0x80u | uint32_t((col >> geo.ush[a]) & (geo.u[a] - 1))) << (8 * b);
      }
      table[i] = word;
    }
  }

  // Sets this thread's entries s[4n + 2r + e] of its two rows r to -inf
  // where the column lies outside the row's range win[r][2a, 2a + 1) along
  // an axis a flagged in `partial`; j0: the tile's origin.
  static __device__ __forceinline__ void apply(float* s, const uint32_t* table, const int* j0, const int (*win)[6],
                                               unsigned partial, int lane) {
    uint32_t keep[2][kWords];
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int w = 0; w < kWords; ++w) keep[r][w] = 0x80808080u;
    const uint32_t* t = table + (lane & 3) * 3 * kWords;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      if (!((partial >> a) & 1)) continue;
      uint32_t c[kWords];
#pragma unroll
      for (int w = 0; w < kWords; w += 4) *reinterpret_cast<uint4*>(c + w) = lds128(t + a * kWords + w);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const uint32_t lo = uint32_t(min(max(win[r][2 * a] - j0[a], 0), 128)) * 0x01010101u;
        const uint32_t hi = uint32_t(min(max(win[r][2 * a + 1] - j0[a], 0), 128)) * 0x01010101u;
#pragma unroll
        for (int w = 0; w < kWords; ++w) keep[r][w] &= (c[w] - lo) & ~(c[w] - hi);
      }
    }
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

// Packs an m64nN fp32 accumulator tile (this thread's part) into the
// register A operand of the next wgmma (k-steps of 16 columns).
template <class T, int N>
__device__ __forceinline__ void pack_a(uint32_t (*a)[4], const float* s) {
#pragma unroll
  for (int kk = 0; kk < N / 16; ++kk) {
    a[kk][0] = fused::pack2<T>(s[8 * kk + 0], s[8 * kk + 1]);
    a[kk][1] = fused::pack2<T>(s[8 * kk + 2], s[8 * kk + 3]);
    a[kk][2] = fused::pack2<T>(s[8 * kk + 4], s[8 * kk + 5]);
    a[kk][3] = fused::pack2<T>(s[8 * kk + 6], s[8 * kk + 7]);
  }
}

// Stores this thread's two rows r of an m64nHD fp32 accumulator tile, times
// scale[r], as element pairs (the support checks require a unit-stride head
// dimension and even strides). row(r) -> destination row or nullptr.
template <class T, int HD, class RowPtr>
__device__ __forceinline__ void store_rows(const float* acc, const float* scale, int lane, RowPtr row) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    T* g = row(r);
    if (!g) continue;
#pragma unroll
    for (int n = 0; n < HD / 8; ++n) {
      const int d = 8 * n + 2 * (lane & 3);
      *reinterpret_cast<uint32_t*>(g + d) = fused::pack2<T>(acc[4 * n + 2 * r] * scale[r], acc[4 * n + 2 * r + 1] * scale[r]);
    }
  }
}

}  // namespace nhood::hopper
