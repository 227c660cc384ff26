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

// Sets the accumulator entries of this thread's two rows (of an m64nN
// wgmma tile, N columns) to -inf where the column token's local coordinate
// along `axis` falls outside the row's range win[r][2 axis, 2 axis + 1)
// (its window, or its inverse window in the dK/dV pass). Columns are inner
// tiles of shape geo.u starting at group position j0 along `axis`. Called
// only for the axes along which the tile is not inside every row's range.
// Unsigned compare: lo <= c < hi.
template <int N>
__device__ __forceinline__ void mask_axis(float* s, const Geo& geo, int axis, int j0, const int (*win)[6], int lane) {
  const int sh = geo.ush[axis], um = geo.u[axis] - 1;
  int lo[2];
  unsigned len[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    lo[r] = win[r][2 * axis] - j0;
    len[r] = unsigned(max(win[r][2 * axis + 1] - win[r][2 * axis], 0));
  }
#pragma unroll
  for (int n = 0; n < N / 8; ++n)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int c = ((8 * n + 2 * (lane & 3) + e) >> sh) & um;
#pragma unroll
      for (int r = 0; r < 2; ++r)
        if (unsigned(c - lo[r]) >= len[r]) s[4 * n + 2 * r + e] = -INFINITY;
    }
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
