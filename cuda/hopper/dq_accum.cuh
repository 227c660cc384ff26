// The pass after the hopper backward's single-pass kernel (backward.cuh,
// FuseDq): dQ was summed in float32 by TMA reductions into a contiguous
// [B, X, Y, Z, H, D] accumulator; this writes scale * accumulator into dq
// (any strides the pair stores accept: unit-stride head dimension, even
// strides) in dq's dtype.
#pragma once

#include "stats.cuh"

namespace nhood::hopper {

// Per thread and step 8 elements (vec: dq's rows 16-byte aligned, two
// 16-byte loads and one 16-byte store), else one pair. I: the index type,
// 32-bit when the element count allows.
template <class T, class I>
__global__ void dq_from_accum_kernel(const Params p, const float* acc, bool vec) {
  const int width = vec ? 8 : 2;
  const I per_row = I(p.head_dim / width), heads = I(p.heads), n = I(p.tokens());
  const I lz = I(p.axis[2].length), ly = I(p.axis[1].length);
  const I groups = I(p.batch) * n * heads * per_row;
  const float scale = float(p.scale);
  const detail::Operand& o = p.dq;
  for (I e = I(blockIdx.x) * blockDim.x + threadIdx.x; e < groups; e += I(gridDim.x) * blockDim.x) {
    const I d = width * (e % per_row), row = e / per_row;  // row: (b, token, h), h fastest
    const I h = row % heads, bt = row / heads;
    const I t = bt % n, b = bt / n;
    const int64_t z = t % lz, y = (t / lz) % ly, x = t / (lz * ly);
    const float* src = acc + int64_t(width) * e;
    T* dst = static_cast<T*>(o.data) + int64_t(b) * o.sb + x * o.sx + y * o.sy + z * o.sz + int64_t(h) * o.sh + d;
    if (vec) {
      const float4 u = *reinterpret_cast<const float4*>(src), v = *reinterpret_cast<const float4*>(src + 4);
      *reinterpret_cast<uint4*>(dst) =
          make_uint4(fused::pack2<T>(u.x * scale, u.y * scale), fused::pack2<T>(u.z * scale, u.w * scale),
                     fused::pack2<T>(v.x * scale, v.y * scale), fused::pack2<T>(v.z * scale, v.w * scale));
    } else {
      const float2 u = *reinterpret_cast<const float2*>(src);
      *reinterpret_cast<uint32_t*>(dst) = fused::pack2<T>(u.x * scale, u.y * scale);
    }
  }
}

}  // namespace nhood::hopper
