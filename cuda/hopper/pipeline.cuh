// Pieces shared by the hopper kernels (forward.cuh, backward.cuh): the work
// item order of the persistent grid, TMA box loads at block-tile
// coordinates, the ring of shared-memory stages, packing and storing
// accumulator fragments (tile walks and masks: ../fused/tile_walk.cuh).
#pragma once

#include <cuda.h>

#include <cmath>

#include "../fused/tile_walk.cuh"
#include "ptx.cuh"

namespace nhood::hopper {

using detail::Params;
using fused::BlockTile;
using fused::Geo;
using fused::fast_exp2;
using fused::KvWalk;
using fused::MaskTable;
using fused::partial_axes;
using fused::TileCursor;
using fused::tree_reduce;

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

// Position in a ring of shared-memory stages.
template <int kStages>
struct Ring {
  int stage = 0;
  uint32_t phase = 0;
  __device__ void advance() {
    if (++stage == kStages) stage = 0, phase ^= 1;
  }
};

// A ring stage's header, written by a producer next to the tile's loads
// (before its barrier arrival, which releases it): the inner tile's origin
// and the axes along which it needs a mask. The consumers read it instead of
// walking the box themselves: the walk's branches and compares were ~8% of
// the forward consumers' stall samples (ncu, 2-D), on the path between two
// turns at the tensor cores.
__device__ __forceinline__ void put_tile_header(void* dst, const Geo& geo, const KvWalk& kw, const int* j0) {
  *static_cast<int4*>(dst) = make_int4(j0[0], j0[1], j0[2], int(partial_axes(geo, kw, j0)));
}
__device__ __forceinline__ int4 get_tile_header(const void* src) {
  const uint4 v = lds128(src);
  return make_int4(int(v.x), int(v.y), int(v.z), int(v.w));
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
