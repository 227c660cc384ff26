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

// The persistent grid's work items: (block tile, head, batch), tiles
// varying fastest so concurrently running CTAs share KV halos in L2. The
// divisors are host-computed: run-time integer divisions were part of the
// forward consumers' 1.3 us per-item setup (timeline of the 1-D anchor).
struct WorkItems {
  int count;  // tiles * heads * batch
  fused::FastDiv tiles, heads;
  WorkItems() = default;
  WorkItems(int64_t n_tiles, int64_t n_heads, int64_t batch)
      : count(int(n_tiles * n_heads * batch)), tiles(int(n_tiles)), heads(int(n_heads)) {}
};

struct Item {
  int tile, h, b;
  __device__ Item(int item, const WorkItems& s) {
    const int th = s.tiles.div(item);
    tile = s.tiles.mod(item, th);
    b = s.heads.div(th);
    h = s.heads.mod(th, b);
  }
};

// The persistent grid's loop: this CTA's work items in order, each with its
// block tile; items whose tile is empty are skipped alike by every role, so
// producers and consumers stay in step. f(w, bt).
template <class F>
__device__ __forceinline__ void for_each_item(const Params& p, const Geo& geo, const WorkItems& items, F&& f) {
  for (int item = blockIdx.x; item < items.count; item += gridDim.x) {
    const Item w(item, items);
    BlockTile bt;
    if (bt.init(p, geo, w.tile)) f(w, bt);
  }
}

// Work items claimed at run time, in order: the backward's items differ up
// to 11x in length (the 3-D anchor's inverse boxes: 60 to 675 ring tiles),
// so CTAs striding through them statically drift apart; a host model of
// the 3-D dK/dV pass put the items in flight at any time across ~600
// consecutive items (two thirds of a head) with static striding and ~200
// claimed in order, whose ring tiles then share L2 (docs/performance.md,
// hopper session 26). The producer thread claims the next item from a
// global counter once it has issued the current item's last load (a ring's
// depth before the consumers finish it) and publishes it through a two-slot
// mailbox; the other roles' warps read it there. The item goes through a
// shuffle so ptxas sees it warp-uniform (the loop state derived from it
// then stays in uniform registers: reading it without one, an earlier
// attempt spilled 9 values per step, session 24).
struct ItemMailbox {
  uint64_t full[2], empty[2];  // full: the producer's arrival; empty: one arrival per reading warp
  int slot[2];
};

// The claimed-item form of for_each_item: `producer` (one thread) claims
// and publishes, every other caller is a whole warp that reads. counter:
// zeroed before the launch (inverse_windows.cu); the first item of each CTA
// is blockIdx.x, claims continue from gridDim.x. Without a counter the
// producer publishes for_each_item's static order (grids of few items per
// CTA, where claiming in order lost: the 1-D anchor's two items per CTA,
// backward +4%, as the last claims may go to long items).
template <class F>
__device__ __forceinline__ void for_each_claimed_item(const Params& p, const Geo& geo, const WorkItems& items,
                                                      ItemMailbox& mb, int* counter, bool producer, F&& f) {
  int item = blockIdx.x;
  for (int k = 0;; ++k) {
    const int s = k & 1;
    const uint32_t phase = (k >> 1) & 1;
    if (producer) {
      mbar_wait(&mb.empty[s], phase ^ 1);
      *reinterpret_cast<volatile int*>(&mb.slot[s]) = item;
      mbar_arrive(&mb.full[s]);  // (release: the slot is visible to the readers' acquiring wait)
    } else {
      mbar_wait(&mb.full[s], phase);
      item = __shfl_sync(0xffffffffu, *reinterpret_cast<volatile const int*>(&mb.slot[s]), 0);
      __syncwarp();
      if ((threadIdx.x & 31) == 0) mbar_arrive(&mb.empty[s]);
    }
    if (item >= items.count) return;
    const Item w(item, items);
    BlockTile bt;
    if (bt.init(p, geo, w.tile)) f(w, bt);
    if (producer) item = counter ? int(gridDim.x) + atomicAdd(counter, 1) : item + int(gridDim.x);
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

// TMA store of such a box from shared memory (the same panels); the copy
// engine clips what lies outside the tensor.
template <int PANELS>
__device__ __forceinline__ void store_box(const unsigned char* src, const CUtensorMap* map, int col, const Params& p,
                                          const BlockTile& bt, const int* pos0, int b, int panel_bytes) {
#pragma unroll
  for (int c = 0; c < PANELS; ++c)
    tma_store_5d(map, src + c * panel_bytes, col + 64 * c, coord(p, bt, 2, pos0[2]), coord(p, bt, 1, pos0[1]),
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
// (before its barrier arrival, which releases it), so the consumers need no
// walk of their own: the walk's branches and compares were ~8% of the
// forward consumers' stall samples (ncu, 2-D), on the path between two
// turns at the tensor cores, and its setup most of their per-item setup.
// A spatial tile: its origin, and the axes along which it needs a mask; an
// additional-token tile: its first token. Both: the item's number of tiles
// (28 bits: a box of 2^35 keys would not fit in memory).
struct TileHeader {
  int j0[3];   // spatial: origin; additional: j0[0] = first token
  unsigned partial;  // axes needing a mask (bits 0-2)
  bool additional;
  int n_total;  // tiles of the work item

  static __device__ __forceinline__ void put_spatial(void* dst, const Geo& geo, const KvWalk& kw, const int* j0) {
    *static_cast<int4*>(dst) = make_int4(j0[0], j0[1], j0[2], int(partial_axes(geo, kw, j0) | (kw.n_total << 4)));
  }
  static __device__ __forceinline__ void put_additional(void* dst, const KvWalk& kw, int first) {
    *static_cast<int4*>(dst) = make_int4(first, 0, 0, int(8 | (kw.n_total << 4)));
  }
  static __device__ __forceinline__ TileHeader get(const void* src) {
    const uint4 v = lds128(src);
    return {{int(v.x), int(v.y), int(v.z)}, v.w & 7u, (v.w & 8u) != 0, int(v.w >> 4)};
  }
};

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

// Writes this warp's 16 rows (tile rows row0 .. row0 + 15) of an m64nHD fp32
// accumulator tile, times scale[r], as T into a tile of 64-column panels
// `panel_bytes` apart, rows of 128 bytes with the 128-byte swizzle: the
// layout of a TMA box with CU_TENSOR_MAP_SWIZZLE_128B. stmatrix takes the
// accumulator fragments as they are (matrix m: rows + 8 (m % 2), columns
// 8 (n0 + m / 2) ..).
template <class T, int HD>
__device__ __forceinline__ void stage_rows(unsigned char* dst, const float* acc, const float* scale, int row0,
                                           int lane, int panel_bytes) {
  const int m = lane / 8, row = row0 + 8 * (m & 1) + lane % 8;
#pragma unroll
  for (int n0 = 0; n0 < HD / 8; n0 += 2) {
    uint32_t r[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int n = n0 + i / 2, h = i % 2;
      r[i] = fused::pack2<T>(acc[4 * n + 2 * h] * scale[h], acc[4 * n + 2 * h + 1] * scale[h]);
    }
    const int n = n0 + m / 2;  // the matrix whose row this lane addresses
    stsm4(smem_addr(dst + (n / 8) * panel_bytes + sw128_offset(row, n % 8)), r);
  }
}

}  // namespace nhood::hopper
