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
  template <int HD, class T>
  __device__ __forceinline__ void load(const Params& p, const int* g, const int* j0, const int* end, T* sm0,
                                       const T* g0, const Operand& o0, int ncols0, T* sm1, const T* g1,
                                       const Operand& o1, int ncols1) const {
    constexpr int LD = HD + 8;
    constexpr int CH = HD / 8;             // 16-byte chunks per row
    constexpr int RSTEP = kThreads / CH;   // rows per pass of the block
    static_assert(kThreads % CH == 0 && BK % RSTEP == 0);
    int64_t base0 = 0, base1 = 0;
    {
      const int64_t s0[3] = {o0.sx, o0.sy, o0.sz}, s1[3] = {o1.sx, o1.sy, o1.sz};
#pragma unroll
      for (int a = 0; a < 3; ++a) {
        const int64_t pos = g[a] + int64_t(p.axis[a].dilation) * j0[a];
        base0 += pos * s0[a];
        base1 += pos * s1[a];
      }
    }
    const uint32_t lim = limits(j0, end);
    const int c = threadIdx.x % CH, r0 = threadIdx.x / CH;
    const bool c0 = c * 8 < ncols0, c1 = c * 8 < ncols1;
#pragma unroll
    for (int k = 0; k < BK / RSTEP; ++k) {
      const int r = r0 + k * RSTEP;
      const bool in = ((lc[r] - lim) & 0x00808080u) == 0;
      const bool v0 = in && c0, v1 = in && c1;
      cp_async16(sm0 + r * LD + c * 8, v0 ? g0 + base0 + local[0][r] + c * 8 : g0, v0);
      cp_async16(sm1 + r * LD + c * 8, v1 ? g1 + base1 + local[1][r] + c * 8 : g1, v1);
    }
  }
};

}  // namespace nhood::fused
