// dQ kernel of the fused backend (query-major): a block of 64 queries walks
// its KV neighborhood box like the forward and accumulates
// dQ = scale * sum_j P_ij (dP_ij - delta_i) K_j.
#pragma once

#include "forward.cuh"

namespace nhood::fused {

template <class T, int HD, int BK>
constexpr int dq_smem_bytes() {
  return (2 * kRows + 4 * BK) * (HD + 8) * int(sizeof(T));
}

template <class T, int HD, int BK>
__global__ void __launch_bounds__(kThreads) dq_kernel(const Params p, const Geo geo) {
  constexpr int LD = HD + 8;
  extern __shared__ __align__(16) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem);
  T* sO = sQ + kRows * LD;  // dO
  T* sK0 = sO + kRows * LD;
  T* sV0 = sK0 + 2 * BK * LD;
  __shared__ int s_win[kRows][6];
  __shared__ float s_lse[kRows], s_delta[kRows];
  __shared__ TileRows<BK> rows;
  __shared__ int4 s_tile[2];  // per buffer: the tile's origin and its partial axes (bits)
  __shared__ __align__(16) uint32_t s_mask[MaskTable<BK>::kBytes / 4];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int b = blockIdx.z, h = blockIdx.y, hk = geo.kv_group.div(h);
  BlockTile bt;
  if (!bt.init(p, geo, blockIdx.x)) return;
  KvWalk kw;
  kw.init(p, geo, bt, BK);

  if (threadIdx.x < kRows) {
    int q[3];
    const bool ok = bt.pos(geo, threadIdx.x, q);
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      const IndexRange w = window_in_group(p.axis[a], q[a], bt.lg[a]);
      s_win[threadIdx.x][2 * a] = ok ? int(w.begin) : 1;
      s_win[threadIdx.x][2 * a + 1] = ok ? int(w.end) : 0;
    }
    float lse = 0.f, delta = 0.f;
    if (ok) {
      lse = static_cast<const float*>(p.lse.data)[b * p.lse.sb + h * p.lse.sh + tok_off(p.lse, p, bt.g, q)];
      delta = geo.delta[row_index(p, b, bt.g, q, h)];
    }
    s_lse[threadIdx.x] = lse * kLog2e;
    s_delta[threadIdx.x] = delta;
  }
  rows.build(p, geo, p.k, p.v);
  MaskTable<BK>::build(s_mask, geo);
  __syncthreads();
  auto qrow = [&](const Operand& o) {
    return [&, o](int r, int64_t& off) {
      int q[3];
      const bool ok = bt.pos(geo, r, q);
      off = tok_off(o, p, bt.g, q);
      return ok;
    };
  };
  load_rows<HD, kRows>(sQ, static_cast<const T*>(p.q.data) + b * p.q.sb + h * p.q.sh, p.q.sd, int(p.head_dim),
                       geo.vec, qrow(p.q));
  load_rows<HD, kRows>(sO, static_cast<const T*>(p.d_out.data) + b * p.d_out.sb + h * p.d_out.sh, p.d_out.sd,
                       int(p.head_dim_v), geo.vec, qrow(p.d_out));
  // Spatial tiles are loaded one step ahead of their use; the cursor walks them.
  TileCursor cursor;
  auto issue = [&](int it) {
    const int buf = it & 1;
    load_kv<T, HD, BK>(p, geo, bt, kw, it, cursor, &s_tile[buf], rows, b, hk, sK0 + buf * BK * LD, sV0 + buf * BK * LD);
  };
  if (kw.n_total > 0) issue(0);
  cp_async_commit();

  const int r0 = warp * 16 + lane / 4;
  int win[2][6];
  float lse2[2], delta[2];
  float dq[HD / 8][4];
#pragma unroll
  for (int n = 0; n < HD / 8; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.f;
  const float scale2 = float(p.scale) * kLog2e;

  for (int it = 0; it < kw.n_total; ++it) {
    cp_async_wait<0>();
    __syncthreads();
    if (it == 0) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
#pragma unroll
        for (int c = 0; c < 6; ++c) win[r][c] = s_win[r0 + 8 * r][c];
        lse2[r] = s_lse[r0 + 8 * r];
        delta[r] = s_delta[r0 + 8 * r];
      }
    }
    const int buf = it & 1;
    if (it + 1 < kw.n_total) issue(it + 1);
    cp_async_commit();
    const T* sK = sK0 + buf * BK * LD;
    const T* sV = sV0 + buf * BK * LD;

    // x = S scale log2(e) - lse (log2 units), masked to -inf, then P = 2^x:
    // masking after the scale keeps it right for negative scales too.
    float s[BK / 8][4];
    qk<T, HD, BK>(s, sQ, sK, warp, lane);
#pragma unroll
    for (int n = 0; n < BK / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] = fmaf(s[n][e], scale2, -lse2[e >> 1]);
    if (it < kw.n_spatial) {
      const int4 tile = s_tile[buf];
      const int j0[3] = {tile.x, tile.y, tile.z};
      if (tile.w) MaskTable<BK>::apply(&s[0][0], s_mask, j0, win, unsigned(tile.w), lane);
    } else {
      const int a0 = (it - kw.n_spatial) * BK;
      if (a0 + BK > p.n_additional) mask_additional<BK>(s, a0, int(p.n_additional), lane);
    }
    float dp[BK / 8][4];
    qk<T, HD, BK>(dp, sO, sV, warp, lane);  // dP = dO V^T
#pragma unroll
    for (int n = 0; n < BK / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] = fast_exp2(s[n][e]) * (dp[n][e] - delta[e >> 1]);
    pv<T, HD, BK>(dq, s, sK, lane);  // dQ += dS K
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    int q[3];
    if (!bt.pos(geo, r0 + 8 * r, q)) continue;
    T* g = static_cast<T*>(p.dq.data) + b * p.dq.sb + h * p.dq.sh + tok_off(p.dq, p, bt.g, q);
    store_row<T, HD>(g, p.dq.sd, int(p.head_dim), dq, r, float(p.scale), lane);
  }
}

}  // namespace nhood::fused
