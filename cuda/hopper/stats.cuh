// The pass before the hopper backward: per query row the two statistics the
// backward needs, (lse * log2(e), delta = rowsum(dO * O)), as one float2 in
// [B, H, tokens] order. Head-major on purpose: the dK/dV pass reads them for
// the 64 queries of every ring tile, runs of consecutive tokens along z that
// then share sectors, where the forward's lse layout [B, X, Y, Z, H] would
// put each query in a sector of its own (filled with other heads' values).
#pragma once

#include "pipeline.cuh"

namespace nhood::hopper {

// Token index (x, y, z row-major over the full axes) of group positions q in
// dilation group g: the position of a row inside one (batch, head) of stats.
__device__ __forceinline__ int64_t token_index(const Params& p, const int* g, const int* q) {
  const int64_t x = g[0] + p.axis[0].dilation * q[0];
  const int64_t y = g[1] + p.axis[1].dilation * q[1];
  const int64_t z = g[2] + p.axis[2].dilation * q[2];
  return (x * p.axis[1].length + y) * p.axis[2].length + z;
}

__device__ __forceinline__ float2 unpack2(uint32_t u, __half) { return __half22float2(*reinterpret_cast<__half2*>(&u)); }
__device__ __forceinline__ float2 unpack2(uint32_t u, __nv_bfloat16) {
  return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&u));
}

// kStatLanes lanes per row. vec: out and d_out rows are unit-stride with
// 16-byte aligned rows, so each lane loads 8 elements at a time (a row of
// head dim 128 is two 128-byte loads per 8 lanes); otherwise single elements.
// 16-byte loads with four rows per warp read ~2x faster than one warp per
// row with element pairs did. I: the index type, 32-bit when the row count
// allows (the row's five divisions in 64 bits cost more issue slots than its
// loads take time).
constexpr int kStatLanes = 8;

template <class T, class I>
__global__ void stats_kernel(const Params p, float2* stats, bool vec) {
  const I n = I(p.tokens()), heads = I(p.heads), lz = I(p.axis[2].length), ly = I(p.axis[1].length);
  const I rows = I(p.batch) * heads * n;
  const int sub = threadIdx.x % kStatLanes;
  // The shuffles name only this row's lanes: rows of one warp may leave the loop at different times.
  const unsigned lanes = 0xffu << (threadIdx.x % 32 - sub);
  for (I row = (I(blockIdx.x) * blockDim.x + threadIdx.x) / kStatLanes; row < rows;
       row += I(gridDim.x) * blockDim.x / kStatLanes) {
    const I t = row % n, bh = row / n;
    const int64_t h = bh % heads, b = bh / heads;
    const int64_t z = t % lz, y = (t / lz) % ly, x = t / (lz * ly);
    auto at = [&](const detail::Operand& o) { return b * o.sb + x * o.sx + y * o.sy + z * o.sz + h * o.sh; };
    const T* o = static_cast<const T*>(p.out.data) + at(p.out);
    const T* g = static_cast<const T*>(p.d_out.data) + at(p.d_out);
    float acc = 0.f;
    if (vec) {
#pragma unroll 2
      for (int d = 8 * sub; d < p.head_dim_v; d += 8 * kStatLanes) {
        const uint4 u = __ldg(reinterpret_cast<const uint4*>(o + d));
        const uint4 v = __ldg(reinterpret_cast<const uint4*>(g + d));
        const uint32_t uw[4] = {u.x, u.y, u.z, u.w}, vw[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float2 a = unpack2(uw[e], T{}), c = unpack2(vw[e], T{});
          acc += a.x * c.x + a.y * c.y;
        }
      }
    } else {
      for (int64_t d = sub; d < p.head_dim_v; d += kStatLanes)
        acc += fused::to_float(o[d * p.out.sd]) * fused::to_float(g[d * p.d_out.sd]);
    }
#pragma unroll
    for (int s = kStatLanes / 2; s > 0; s >>= 1) acc += __shfl_xor_sync(lanes, acc, s);
    if (sub == 0) stats[row] = make_float2(static_cast<const float*>(p.lse.data)[at(p.lse)] * fused::kLog2e, acc);
  }
}

}  // namespace nhood::hopper
