// The pass after the hopper backward's single-pass kernel (backward.cuh,
// FuseDq): dQ was summed in float32 by TMA reductions into a contiguous
// [B, X, Y, Z, H, D] accumulator; this writes scale * accumulator into dq
// (any strides the pair stores accept: unit-stride head dimension, even
// strides) in dq's dtype.
#pragma once

#include "stats.cuh"

namespace nhood::hopper {

// One element pair per thread and step. I: the index type, 32-bit when the
// pair count allows.
template <class T, class I>
__global__ void dq_from_accum_kernel(const Params p, const float* acc) {
  const I half_dim = I(p.head_dim / 2), heads = I(p.heads), n = I(p.tokens());
  const I lz = I(p.axis[2].length), ly = I(p.axis[1].length);
  const I pairs = I(p.batch) * n * heads * half_dim;
  const float scale = float(p.scale);
  const detail::Operand& o = p.dq;
  for (I e = I(blockIdx.x) * blockDim.x + threadIdx.x; e < pairs; e += I(gridDim.x) * blockDim.x) {
    const I d = 2 * (e % half_dim), row = e / half_dim;  // row: (b, token, h), h fastest
    const I h = row % heads, bt = row / heads;
    const I t = bt % n, b = bt / n;
    const int64_t z = t % lz, y = (t / lz) % ly, x = t / (lz * ly);
    const float2 v = *reinterpret_cast<const float2*>(acc + int64_t(2) * e);
    T* dst = static_cast<T*>(o.data) + int64_t(b) * o.sb + x * o.sx + y * o.sy + z * o.sz + int64_t(h) * o.sh + d;
    *reinterpret_cast<uint32_t*>(dst) = fused::pack2<T>(v.x * scale, v.y * scale);
  }
}

}  // namespace nhood::hopper
