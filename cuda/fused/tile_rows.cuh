// Loading spatial inner tiles (BK tokens, box shape geo.u) of two operands
// that the same tokens index (K and V; Q and dO) with 16-byte cp.async.
//
// Row r of the tile at origin j0 is the token at group positions
// j0 + lc(r), lc(r)_a = (r >> ush_a) & (u_a - 1); its element offset is
// base(j0) + local(r) with local(r) = sum_a dilation_a lc(r)_a stride_a,
// which does not depend on the tile. A per-block table holds local(r) for
// both operands and lc(r) as bytes, so a tile load costs one base offset per
// operand and per row two shared loads, a byte-wise bounds test and the
// address add, where recomputing each row's coordinates and three 64-bit
// products per operand cost ~45 instructions per 16 bytes loaded.
#pragma once

#include "fused.cuh"

namespace nhood::fused {

template <int BK>
struct TileRows {
  int64_t local[2][BK];  // per operand
  uint32_t lc[BK];       // 0x80 | lc(r)_a in byte a (a < 3), byte 3 = 0x80

  // Every thread of the block takes part; a __syncthreads() must follow.
  __device__ void build(const Params& p, const Geo& geo, const Operand& o0, const Operand& o1) {
    for (int r = threadIdx.x; r < BK; r += kThreads) {
      const int64_t s0[3] = {o0.sx, o0.sy, o0.sz}, s1[3] = {o1.sx, o1.sy, o1.sz};
      int64_t l0 = 0, l1 = 0;
      uint32_t w = 0x80808080u;
#pragma unroll
      for (int a = 0; a < 3; ++a) {
        const int c = (r >> geo.ush[a]) & (geo.u[a] - 1);
        l0 += int64_t(p.axis[a].dilation) * c * s0[a];
        l1 += int64_t(p.axis[a].dilation) * c * s1[a];
        w |= uint32_t(c) << (8 * a);
      }
      local[0][r] = l0;
      local[1][r] = l1;
      lc[r] = w;
    }
  }

  // Bytes of min(end_a - j0_a, 128): row r is inside the box [., end) iff
  // ((lc[r] - limits) & 0x00808080) == 0 (no byte borrows: 0x80 | c >= limit).
  static __device__ __forceinline__ uint32_t limits(const int* j0, const int* end) {
    uint32_t w = 0;
#pragma unroll
    for (int a = 0; a < 3; ++a) w |= uint32_t(min(max(end[a] - j0[a], 0), 128)) << (8 * a);
    return w;
  }

  // Issues the cp.async loads of the tile at j0 (rows outside [., end) and
  // columns >= ncols_o zero-filled) into two [BK][HD + 8] tiles. g_o: the
  // operand's (batch, head) base; requires 16-byte alignment (geo.vec).
  // Each thread copies CPT chunks of a row per operand, TPR chunks apart, so
  // a row's address (table loads, bounds test, 64-bit add) is computed once
  // per CPT chunks, which then differ by immediate offsets (one chunk per
  // thread and row cost ~26 instructions per row pair, ~20% of the 1-D
  // forward). A warp instruction still covers 64 contiguous bytes per row:
  // with 32-byte pieces (two threads per row) the 1-D forward ran 13% slower
  // (docs/performance.md, fused v6).
  template <int HD, class T>
  __device__ __forceinline__ void load(const Params& p, const int* g, const int* j0, const int* end, T* sm0,
                                       const T* g0, const Operand& o0, int ncols0, T* sm1, const T* g1,
                                       const Operand& o1, int ncols1) const {
    constexpr int LD = HD + 8;
    constexpr int CH = HD / 8;                 // 16-byte chunks per row
    constexpr int TPR = CH < 4 ? CH : 4;       // threads per row
    constexpr int CPT = CH / TPR;              // chunks per thread
    constexpr int RSTEP = kThreads / TPR;      // rows per pass of the block
    static_assert(kThreads % TPR == 0 && BK % RSTEP == 0);
    int64_t base0 = 0, base1 = 0;
    {
      const int64_t s0[3] = {o0.sx, o0.sy, o0.sz}, s1[3] = {o1.sx, o1.sy, o1.sz};
#pragma unroll
      for (int a = 0; a < 3; ++a) {
        const int pos = g[a] + p.axis[a].dilation * j0[a];  // a coordinate: 32 bits (one 64-bit product each)
        base0 += int64_t(pos) * s0[a];
        base1 += int64_t(pos) * s1[a];
      }
    }
    const uint32_t lim = limits(j0, end);
    const int c = (threadIdx.x % TPR) * 8, r0 = threadIdx.x / TPR;
#pragma unroll
    for (int k = 0; k < BK / RSTEP; ++k) {
      const int r = r0 + k * RSTEP;
      const bool in = ((lc[r] - lim) & 0x00808080u) == 0;
      copy_row<CPT, TPR>(sm0 + r * LD + c, in ? g0 + base0 + local[0][r] + c : g0, g0, in, ncols0 - c);
      copy_row<CPT, TPR>(sm1 + r * LD + c, in ? g1 + base1 + local[1][r] + c : g1, g1, in, ncols1 - c);
    }
  }

 private:
  // Chunks j = 0..CPT-1 at element offsets 8 TPR j of one row (ncols: the
  // valid columns from dst/src on, a multiple of 8 as geo.vec requires):
  // from src when the row is in and the chunk's columns exist, else
  // zero-filled, reading nothing (src then points at a valid row).
  template <int CPT, int TPR, class T>
  static __device__ __forceinline__ void copy_row(T* dst, const T* src, const T* fallback, bool in, int ncols) {
    if constexpr (CPT == 1) {
      const bool v = in && ncols > 0;
      cp_async16(dst, v ? src : fallback, v);
    } else if (ncols > 8 * TPR * (CPT - 1)) {  // every chunk's columns exist: immediate offsets from one address
#pragma unroll
      for (int j = 0; j < CPT; ++j) cp_async16(dst + 8 * TPR * j, src + 8 * TPR * j, in);
    } else {
#pragma unroll
      for (int j = 0; j < CPT; ++j) {
        const bool v = in && 8 * TPR * j < ncols;
        cp_async16(dst + 8 * TPR * j, v ? src + 8 * TPR * j : fallback, v);
      }
    }
  }
};

}  // namespace nhood::fused
