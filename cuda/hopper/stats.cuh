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

// One warp per row. pairs: out and d_out rows are unit-stride with 4-byte
// aligned rows, so each lane loads element pairs (full 128-byte sectors per
// warp load) instead of single elements. I: the index type, 32-bit when the
// row count allows (the row's five divisions in 64 bits cost more issue
// slots than its loads take time).
template <class T, class I>
__global__ void stats_kernel(const Params p, float2* stats, bool pairs) {
  const I n = I(p.tokens()), heads = I(p.heads), lz = I(p.axis[2].length), ly = I(p.axis[1].length);
  const I rows = I(p.batch) * heads * n;
  const int lane = threadIdx.x % 32;
  for (I row = (I(blockIdx.x) * blockDim.x + threadIdx.x) / 32; row < rows; row += I(gridDim.x) * blockDim.x / 32) {
    const I t = row % n, bh = row / n;
    const int64_t h = bh % heads, b = bh / heads;
    const int64_t z = t % lz, y = (t / lz) % ly, x = t / (lz * ly);
    auto at = [&](const detail::Operand& o) { return b * o.sb + x * o.sx + y * o.sy + z * o.sz + h * o.sh; };
    const T* o = static_cast<const T*>(p.out.data) + at(p.out);
    const T* g = static_cast<const T*>(p.d_out.data) + at(p.d_out);
    float acc = 0.f;
    if (pairs) {
      for (int d = 2 * lane; d < p.head_dim_v; d += 64) {
        const float2 u = unpack2(*reinterpret_cast<const uint32_t*>(o + d), T{});
        const float2 v = unpack2(*reinterpret_cast<const uint32_t*>(g + d), T{});
        acc += u.x * v.x + u.y * v.y;
      }
    } else {
      for (int64_t d = lane; d < p.head_dim_v; d += 32) acc += fused::to_float(o[d * p.out.sd]) * fused::to_float(g[d * p.d_out.sd]);
    }
#pragma unroll
    for (int s = 16; s > 0; s >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, s);
    if (lane == 0) stats[row] = make_float2(static_cast<const float*>(p.lse.data)[at(p.lse)] * fused::kLog2e, acc);
  }
}

}  // namespace nhood::hopper
