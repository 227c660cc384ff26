// Small-window forward of the fused backend: for kernels small enough that
// a block's whole KV neighborhood box fits one shared-memory tile. Each warp
// then gathers only the keys its own 16 queries can attend: the box of their
// windows, enumerated densely in n-tiles of 8 keys (ldmatrix takes one row
// address per lane, so an n-tile's keys need not be contiguous). One pass:
// S over all of a warp's keys, mask, softmax, P V; no online rescaling.
//
// Why: with 7x7 windows a 64-query block (8x8) has a 14x14 box, walked by
// the general forward as 4 tiles of 64 keys: every query computes 256 logits
// for its 49 keys, and every tile needs the mask. A 4x4 warp tile's box is
// 10x10: 104 logits (13 n-tiles) per query, masked once.
//
// Eligibility and the tile shapes are the host's (geometry.hpp,
// small_window_geo): the box fits kSmallBoxRows rows (geo.u, powers of two,
// each extent < 128) and a warp's keys fit kSmallWarpKeys.
#pragma once

#include <cmath>

#include "forward.cuh"

namespace nhood::fused {

template <class T, int HD>
constexpr int small_smem_bytes() {
  return (kRows + 2 * kSmallBoxRows) * (HD + 8) * int(sizeof(T));
}

// Registers for 4 blocks per SM at head dim 32, as shared memory allows.
template <int HD>
constexpr int small_min_blocks() {
  return HD == 32 ? 4 : 1;
}

// Row r of the block tile -> group positions; warp-major, so that a warp's
// 16 rows form its warp tile (shape 1 << wlog[a]). False for padding rows.
__device__ __forceinline__ bool small_pos(const Geo& geo, const BlockTile& bt, int r, int* q) {
  bool ok = true;
#pragma unroll
  for (int a = 0; a < 3; ++a) {
    const int tile = ((r >> 4) >> geo.wgsh[a]) & geo.wgmask[a];
    q[a] = bt.p0[a] + (tile << geo.wlog[a]) + ((r >> geo.wsh[a]) & ((1 << geo.wlog[a]) - 1));
    ok = ok && q[a] < bt.pend[a];
  }
  return ok;
}

template <class T, int HD>
__global__ void __launch_bounds__(kThreads, small_min_blocks<HD>()) small_forward_kernel(const Params p,
                                                                                        const Geo geo) {
  constexpr int LD = HD + 8;
  constexpr int NB = kSmallBoxRows;
  constexpr int NP = kSmallWarpKeys / 16;  // n-tile pairs a warp may need
  extern __shared__ __align__(16) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem);
  T* sK = sQ + kRows * LD;  // the whole box: row = sum_a c_a << ush[a]
  T* sV = sK + NB * LD;
  __shared__ TileRows<NB> rows;
  __shared__ uint16_t s_krow[kThreads / 32][kSmallWarpKeys];  // per warp: its k-th key's box row
  // ... and its box coordinates as bytes 0x80 | c_a (0xff: padding key)
  __shared__ __align__(8) uint32_t s_kc[kThreads / 32][kSmallWarpKeys];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int b = blockIdx.z, h = blockIdx.y, hk = geo.kv_group.div(h);
  BlockTile bt;
  if (!bt.init(p, geo, blockIdx.x)) return;
  KvWalk kw;
  kw.init(p, geo, bt, NB);  // the box [kb, ke): one inner tile of shape geo.u

  {
    const T* gq = static_cast<const T*>(p.q.data) + b * p.q.sb + h * p.q.sh;
    load_rows<HD, kRows>(sQ, gq, p.q.sd, int(p.head_dim), true, [&](int r, int64_t& off) {
      int q[3];
      const bool ok = small_pos(geo, bt, r, q);
      off = tok_off(p.q, p, bt.g, q);
      return ok;
    });
  }
  rows.build(p, geo, p.k, p.v);
  __syncthreads();
  rows.template load<HD>(p, bt.g, kw.kb, kw.ke, sK, static_cast<const T*>(p.k.data) + b * p.k.sb + hk * p.k.sh,
                         p.k, int(p.head_dim), sV, static_cast<const T*>(p.v.data) + b * p.v.sb + hk * p.v.sh,
                         p.v, int(p.head_dim_v));
  cp_async_commit();

  // Windows of this warp's rows (lane & 15), box-relative, as bytes for the
  // mask test; their union [lo, hi) is the warp's key box.
  uint32_t win_lo = 0, win_hi = 0;  // padding rows: [0, 0), nothing passes
  int lo[3], hi[3];
  {
    int q[3];
    const bool ok = small_pos(geo, bt, warp * 16 + (lane & 15), q);
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      const IndexRange w = window_in_group(p.axis[a], q[a], bt.lg[a]);
      const int wb = int(w.begin) - kw.kb[a], we = int(w.end) - kw.kb[a];
      lo[a] = ok ? wb : 1 << 30;
      hi[a] = ok ? we : 0;
      win_lo |= uint32_t(ok ? wb : 0) << (8 * a);
      win_hi |= uint32_t(ok ? we : 0) << (8 * a);
    }
#pragma unroll
    for (int sh = 1; sh < 16; sh *= 2)
#pragma unroll
      for (int a = 0; a < 3; ++a) {
        lo[a] = min(lo[a], __shfl_xor_sync(0xffffffffu, lo[a], sh));
        hi[a] = max(hi[a], __shfl_xor_sync(0xffffffffu, hi[a], sh));
      }
  }
  const int e0 = max(hi[0] - lo[0], 0), e1 = max(hi[1] - lo[1], 0), e2 = max(hi[2] - lo[2], 0);
  const int n_keys = min(e0 * e1 * e2, kSmallWarpKeys);  // <= by the host's bound
  const int n_pairs = (n_keys + 15) / 16;
#pragma unroll
  for (int j = 0; j < kSmallWarpKeys / 32; ++j) {
    const int k = lane + 32 * j;
    uint32_t row = 0, kc = 0xffffffffu;  // padding keys read row 0 (finite) and fail every window
    if (k < n_keys) {
      const int c2 = lo[2] + k % e2, t = k / e2, c1 = lo[1] + t % e1, c0 = lo[0] + t / e1;
      row = (c0 << geo.ush[0]) | (c1 << geo.ush[1]) | (c2 << geo.ush[2]);
      kc = 0x80808080u | uint32_t(c0) | uint32_t(c1) << 8 | uint32_t(c2) << 16;
    }
    s_krow[warp][k] = uint16_t(row);
    s_kc[warp][k] = kc;
  }
  __syncwarp();
  const uint32_t row_lo[2] = {__shfl_sync(0xffffffffu, win_lo, lane / 4),
                              __shfl_sync(0xffffffffu, win_lo, lane / 4 + 8)};
  const uint32_t row_hi[2] = {__shfl_sync(0xffffffffu, win_hi, lane / 4),
                              __shfl_sync(0xffffffffu, win_hi, lane / 4 + 8)};
  cp_async_wait<0>();
  __syncthreads();

  // S = Q K^T over the warp's keys; lane l addresses key 16 np + (l & 7) + 8 (l >> 4).
  float s[2 * NP][4];
#pragma unroll
  for (int n = 0; n < 2 * NP; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
  {
    int krow[NP];
#pragma unroll
    for (int np = 0; np < NP; ++np) krow[np] = s_krow[warp][16 * np + (lane & 7) + 8 * (lane >> 4)];
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      uint32_t a[4];
      ldsm4(a, a_addr<LD>(sQ, warp * 16, kk * 16, lane));
#pragma unroll
      for (int np = 0; np < NP; ++np) {
        if (np >= n_pairs) break;
        uint32_t bb[4];
        ldsm4(bb, sK + krow[np] * LD + kk * 16 + ((lane >> 3) & 1) * 8);
        mma<T>(s[2 * np], a, bb[0], bb[1]);
        mma<T>(s[2 * np + 1], a, bb[2], bb[3]);
      }
    }
  }
  const float scale2 = float(p.scale) * kLog2e;
  const bool premul = !(scale2 > 0.f);  // as in the forward: the max must see scaled logits
  const float fold = premul ? 1.f : scale2;
  // Mask by byte arithmetic (tile_walk.cuh): (0x80 | c) - lo keeps its top
  // bit iff c >= lo, per axis byte, without borrows (lo, hi <= 127).
#pragma unroll
  for (int n = 0; n < 2 * NP; ++n) {
    if (n / 2 >= n_pairs) {  // not computed
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = -INFINITY;
      continue;
    }
    const uint2 kc = lds64(&s_kc[warp][8 * n + 2 * (lane & 3)]);
#pragma unroll
    for (int e = 0; e < 2; ++e)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const uint32_t c = e ? kc.y : kc.x;
        const uint32_t in = (c - row_lo[r]) & ~(c - row_hi[r]) & 0x00808080u;
        float& x = s[n][2 * r + e];
        x = in == 0x00808080u ? (premul ? x * scale2 : x) : -INFINITY;
      }
  }
  // Softmax over all of a row's keys at once (log2 domain); a row lives in 4 lanes.
  float m[2], l[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float t[2 * NP];
#pragma unroll
    for (int n = 0; n < 2 * NP; ++n) t[n] = fmaxf(s[n][2 * r], s[n][2 * r + 1]);
    float x = tree_reduce<2 * NP>(t, [](float u, float v) { return fmaxf(u, v); });
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
    m[r] = x * fold;
    const float base = m[r] == -INFINITY ? 0.f : m[r];
#pragma unroll
    for (int n = 0; n < 2 * NP; ++n) {
      s[n][2 * r] = fast_exp2(fmaf(s[n][2 * r], fold, -base));
      s[n][2 * r + 1] = fast_exp2(fmaf(s[n][2 * r + 1], fold, -base));
      t[n] = s[n][2 * r] + s[n][2 * r + 1];
    }
    l[r] = tree_reduce<2 * NP>(t, [](float u, float v) { return u + v; });
  }
  // O = P V; lane l addresses key 16 kk + (l & 7) + 8 ((l >> 3) & 1).
  float o[HD / 8][4];
#pragma unroll
  for (int n = 0; n < HD / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < NP; ++kk) {
    if (kk >= n_pairs) break;
    uint32_t a[4];
    a[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
    a[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
    a[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    a[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
    const int vrow = s_krow[warp][16 * kk + (lane & 7) + 8 * ((lane >> 3) & 1)];
#pragma unroll
    for (int np = 0; np < HD / 16; ++np) {
      uint32_t bb[4];
      ldsm4t(bb, sV + vrow * LD + np * 16 + (lane >> 4) * 8);
      mma<T>(o[2 * np], a, bb[0], bb[1]);
      mma<T>(o[2 * np + 1], a, bb[2], bb[3]);
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    int q[3];
    const bool ok = small_pos(geo, bt, warp * 16 + lane / 4 + 8 * r, q);
    store_out_row<T, HD>(p, bt.g, q, ok, b, h, o, r, l[r], m[r], lane);
  }
}

}  // namespace nhood::fused
