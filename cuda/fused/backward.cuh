// Backward kernels of the fused backend besides dQ (dq.cuh):
//  - delta: rowsum(dO * O) per query row, float32 workspace;
//  - dK/dV, key-major: a block owns a box of 64 keys of one dilation group
//    (or 64 additional tokens) and gathers over the queries that attend them
//    (the inverse-window box; all queries for additional tokens), for every
//    query head of its kv head. No atomics: deterministic by construction.
#pragma once

#include "forward.cuh"

namespace nhood::fused {

template <class T>
__global__ void delta_kernel(const Params p, float* delta) {
  const int64_t rows = p.batch * p.tokens() * p.heads;
  const int lane = threadIdx.x % 32;
  for (int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; row < rows;
       row += int64_t(gridDim.x) * blockDim.x / 32) {
    int64_t rest = row;
    const int64_t h = rest % p.heads;
    rest /= p.heads;
    const int64_t z = rest % p.axis[2].length;
    rest /= p.axis[2].length;
    const int64_t y = rest % p.axis[1].length;
    rest /= p.axis[1].length;
    const int64_t x = rest % p.axis[0].length;
    const int64_t b = rest / p.axis[0].length;
    const T* o = static_cast<const T*>(p.out.data) + b * p.out.sb + x * p.out.sx + y * p.out.sy + z * p.out.sz +
                 h * p.out.sh;
    const T* g = static_cast<const T*>(p.d_out.data) + b * p.d_out.sb + x * p.d_out.sx + y * p.d_out.sy +
                 z * p.d_out.sz + h * p.d_out.sh;
    float acc = 0.f;
    for (int64_t d = lane; d < p.head_dim_v; d += 32) acc += to_float(o[d * p.out.sd]) * to_float(g[d * p.d_out.sd]);
#pragma unroll
    for (int s = 16; s > 0; s >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, s);
    if (lane == 0) delta[row] = acc;
  }
}

// Q/dO ring depth of the dK/dV kernel. Three stages at head dim 64: its
// ~230 registers per thread already allow only two blocks per SM, and two
// blocks of 77 KB fit. Two elsewhere: at 128 a third stage (136 KB) would
// leave one block per SM; at 32 ptxas then takes ~215 registers instead of
// ~167 (two blocks per SM instead of three).
template <int HD>
__host__ __device__ constexpr int dkdv_stages() {
  return HD == 64 ? 3 : 2;
}

template <class T, int HD>
constexpr int dkdv_smem_bytes() {
  return (2 + 2 * dkdv_stages<HD>()) * kRows * (HD + 8) * int(sizeof(T));
}

// A spatial key block walks the inverse-neighborhood box of its keys (a
// KvWalk with `inverse`) in query tiles of 64, once per query head of its kv
// head; key k is in query q's window iff q is in k's inverse window (windows
// are monotone, window.hpp), so the forward's MaskTable masks S^T with each
// key row's inverse window, on the axes along which the tile is partial.
template <class T, int HD>
__global__ void __launch_bounds__(kThreads) dkdv_kernel(const Params p, const Geo geo) {
  constexpr int LD = HD + 8;
  constexpr int BQ = 64;
  constexpr int NST = dkdv_stages<HD>();
  extern __shared__ __align__(16) unsigned char smem[];
  T* sK = reinterpret_cast<T*>(smem);
  T* sV = sK + kRows * LD;
  T* sQ0 = sV + kRows * LD;  // [NST][BQ][LD]
  T* sO0 = sQ0 + NST * BQ * LD;
  // Per stage: lse and delta of the tile's queries, copied by cp.async with
  // the tile (no global load waited on per step), so lse stays in natural
  // log units (scaled at use). 0 for padding queries: their Q and dO rows
  // are zero, so they add exactly nothing whatever their (finite) P; spatial
  // tiles mask them anyway.
  __shared__ __align__(16) float s_stat[NST][2][BQ];
  __shared__ int4 s_tile[NST];  // spatial: per stage the tile's origin and its partial axes (bits)
  __shared__ TileRows<BQ> rows, stat_rows;  // Q and dO; lse and delta
  __shared__ __align__(16) uint32_t s_mask[MaskTable<BQ>::kBytes / 4];
  __shared__ int2 s_iw[3][kRows];  // spatial: inverse window of the block's position p0 + c along each axis

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int b = blockIdx.z, hk = blockIdx.y;
  const int G = int(p.heads / p.heads_kv);
  const bool additional = int(blockIdx.x) >= geo.n_spatial_blocks;
  const int n_add = int(p.n_additional);
  const float* g_lse = static_cast<const float*>(p.lse.data);

  BlockTile bt;  // spatial keys
  KvWalk kw;     // ... and the box of queries attending them
  int a0 = 0;    // additional keys
  int nq[3];     // additional: query tiles per axis, all dilation groups
  int total;
  if (!additional) {
    if (!bt.init(p, geo, blockIdx.x)) return;
    kw.init(p, geo, bt, BQ, /*inverse=*/true);
    total = G * kw.n_spatial;
    MaskTable<BQ>::build(s_mask, geo);
    rows.build(p, geo, p.q, p.d_out);
    stat_rows.build(p, geo, p.lse, delta_layout(p));
    // A row's inverse window is the product of its coordinates' windows: one
    // binary search per (axis, position), t[0] + t[1] + t[2] <= 66 of them
    // over the block, where each thread's two rows took six.
    int c = threadIdx.x;  // thread i: position c along axis a, i = t[0] + ... + t[a - 1] + c
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      if (c >= 0 && c < geo.t[a]) {
        const int k = bt.p0[a] + c;
        IndexRange w{1, 0};  // padding positions: empty
        if (k < bt.pend[a]) w = inverse_window_in_group(p.axis[a], k, bt.lg[a]);
        s_iw[a][c] = make_int2(int(w.begin), int(w.end));
      }
      c -= geo.t[a];
    }
  } else {
    a0 = (int(blockIdx.x) - geo.n_spatial_blocks) * kRows;
#pragma unroll
    for (int a = 0; a < 3; ++a) nq[a] = p.axis[a].dilation * geo.add_tiles_per_group[a];
    total = G * nq[0] * nq[1] * nq[2];
  }
  __syncthreads();

  // Query tile: head, dilation group, origin and valid end per axis.
  struct QTile {
    int h, g[3], qo[3], qend[3];
  };
  auto add_qtile = [&](int i) {  // additional blocks: tile i over every group (divisions, off the hot path)
    const int nqt = nq[0] * nq[1] * nq[2];
    QTile t;
    t.h = hk * G + i / nqt;
    const int qi = i % nqt;
    int ia[3];
    ia[2] = qi % nq[2];
    ia[1] = (qi / nq[2]) % nq[1];
    ia[0] = qi / (nq[2] * nq[1]);
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      t.g[a] = ia[a] / geo.add_tiles_per_group[a];
      t.qo[a] = (ia[a] % geo.add_tiles_per_group[a]) * geo.u[a];
      t.qend[a] = int(group_length(p.axis[a], t.g[a]));
    }
    return t;
  };
  auto qpos = [&](const QTile& t, int r, int* q) {
    bool ok = true;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      q[a] = t.qo[a] + ((r >> geo.ush[a]) & (geo.u[a] - 1));
      ok = ok && q[a] < t.qend[a];
    }
    return ok;
  };
  // Statistics: thread i stages lse (i < BQ) or delta (i >= BQ) of query row i % BQ.
  static_assert(kThreads == 2 * BQ);
  const int srow = threadIdx.x % BQ, sdelta = threadIdx.x / BQ;
  // Loads of query tile t from per-row coordinates (additional blocks, unaligned operands).
  auto load_generic = [&](const QTile& t, int st) {
    {
      int q[3];
      const bool ok = qpos(t, srow, q);
      const float* src = sdelta ? geo.delta + row_index(p, b, t.g, q, t.h)
                                : g_lse + b * p.lse.sb + t.h * p.lse.sh + tok_off(p.lse, p, t.g, q);
      cp_async_ca<4>(&s_stat[st][sdelta][srow], ok ? src : g_lse, ok);
    }
    auto rowfn = [&](const Operand& o) {
      return [&, o](int r, int64_t& off) {
        int q[3];
        const bool ok = qpos(t, r, q);
        off = tok_off(o, p, t.g, q);
        return ok;
      };
    };
    load_rows<HD, BQ>(sQ0 + st * BQ * LD, static_cast<const T*>(p.q.data) + b * p.q.sb + t.h * p.q.sh, p.q.sd,
                      int(p.head_dim), geo.vec, rowfn(p.q));
    load_rows<HD, BQ>(sO0 + st * BQ * LD, static_cast<const T*>(p.d_out.data) + b * p.d_out.sb + t.h * p.d_out.sh,
                      p.d_out.sd, int(p.head_dim_v), geo.vec, rowfn(p.d_out));
  };
  // Key/value tile.
  if (!additional) {
    auto rowfn = [&](const Operand& o) {
      return [&, o](int r, int64_t& off) {
        int j[3];
        const bool ok = bt.pos(geo, r, j);
        off = tok_off(o, p, bt.g, j);
        return ok;
      };
    };
    load_rows<HD, kRows>(sK, static_cast<const T*>(p.k.data) + b * p.k.sb + hk * p.k.sh, p.k.sd, int(p.head_dim),
                         geo.vec, rowfn(p.k));
    load_rows<HD, kRows>(sV, static_cast<const T*>(p.v.data) + b * p.v.sb + hk * p.v.sh, p.v.sd, int(p.head_dim_v),
                         geo.vec, rowfn(p.v));
  } else {
    const int64_t snk = p.add_k.sn, snv = p.add_v.sn;
    load_rows<HD, kRows>(sK, static_cast<const T*>(p.add_k.data) + b * p.add_k.sb + hk * p.add_k.sh, p.add_k.sd,
                         int(p.head_dim), geo.vec, [&](int r, int64_t& off) {
                           off = (a0 + r) * snk;
                           return a0 + r < n_add;
                         });
    load_rows<HD, kRows>(sV, static_cast<const T*>(p.add_v.data) + b * p.add_v.sb + hk * p.add_v.sh, p.add_v.sd,
                         int(p.head_dim_v), geo.vec, [&](int r, int64_t& off) {
                           off = (a0 + r) * snv;
                           return a0 + r < n_add;
                         });
  }
  // Tile `it` goes to stage it % NST, one cp.async group per tile. Spatial
  // tiles: the cursor walks the box, wrapping to the next query head.
  TileCursor cursor;
  int ih = 0, iq = 0;  // head (within the kv head's group) and box tile of the next spatial issue
  auto issue = [&](int it, auto fast) {
    constexpr bool kFast = decltype(fast)::value;
    const int st = it % NST;
    if (!kFast && additional) {
      load_generic(add_qtile(it), st);
      return;
    }
    int qo[3];
    cursor.origin(geo, kw, qo);
    cursor.advance(kw);
    const int h = hk * G + ih;
    if (++iq == kw.n_spatial) iq = 0, ++ih;
    if (threadIdx.x == 0) s_tile[st] = make_int4(qo[0], qo[1], qo[2], int(partial_axes(geo, kw, qo)));
    if (!kFast) {
      load_generic(QTile{h, {bt.g[0], bt.g[1], bt.g[2]}, {qo[0], qo[1], qo[2]}, {kw.ke[0], kw.ke[1], kw.ke[2]}}, st);
      return;
    }
    {
      const bool in = ((stat_rows.lc[srow] - TileRows<BQ>::limits(qo, kw.ke)) & 0x00808080u) == 0;
      const float* src = sdelta ? geo.delta + row_index(p, b, bt.g, qo, h)
                                : g_lse + b * p.lse.sb + h * p.lse.sh + tok_off(p.lse, p, bt.g, qo);
      cp_async_ca<4>(&s_stat[st][sdelta][srow], in ? src + stat_rows.local[sdelta][srow] : g_lse, in);
    }
    rows.template load<HD>(p, bt.g, qo, kw.ke, sQ0 + st * BQ * LD,
                           static_cast<const T*>(p.q.data) + b * p.q.sb + h * p.q.sh, p.q, int(p.head_dim),
                           sO0 + st * BQ * LD, static_cast<const T*>(p.d_out.data) + b * p.d_out.sb + h * p.d_out.sh,
                           p.d_out, int(p.head_dim_v));
  };

  // This thread's two key rows r0, r0 + 8: their inverse windows per axis
  // (spatial; padding rows get an empty range along an axis they overrun).
  const int r0 = warp * 16 + lane / 4;
  int win[2][6];
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      const int2 w = additional ? make_int2(1, 0) : s_iw[a][((r0 + 8 * r) >> geo.tsh[a]) & (geo.t[a] - 1)];
      win[r][2 * a] = w.x;
      win[r][2 * a + 1] = w.y;
    }
  float dk[HD / 8][4], dv[HD / 8][4];
#pragma unroll
  for (int n = 0; n < HD / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.f;
  const float scale2 = float(p.scale) * kLog2e;
  const int c2 = 2 * (lane & 3);  // this thread's columns 8n + c2 + {0, 1}

  // The steps, in two copies: spatial blocks with aligned operands (tile-row
  // tables), and the generic loads (additional blocks, unaligned operands).
  auto run = [&](auto fast) {
    constexpr bool kFast = decltype(fast)::value;
    // The first group also holds K and V.
#pragma unroll
    for (int it = 0; it < NST - 1; ++it) {
      if (it < total) issue(it, fast);
      cp_async_commit();
    }

    for (int it = 0; it < total; ++it) {
      cp_async_wait<NST - 2>();  // tile it has landed (groups complete in order)
      __syncthreads();           // ... for every thread; and stage (it - 1) % NST is free
      if (it + NST - 1 < total) issue(it + NST - 1, fast);
      cp_async_commit();
      const int st = it % NST;
      const T* sQ = sQ0 + st * BQ * LD;
      const T* sO = sO0 + st * BQ * LD;

      float s[BQ / 8][4];
      qk<T, HD, BQ>(s, sK, sQ, warp, lane);  // S^T = K Q^T
      // Exponents first, masked after: a masked raw logit (-inf) times a
      // negative scale would be +inf.
#pragma unroll
      for (int n = 0; n < BQ / 8; ++n) {
        const float2 l = lds64f(&s_stat[st][0][8 * n + c2]);
        const float l0 = l.x * kLog2e, l1 = l.y * kLog2e;
        s[n][0] = fmaf(s[n][0], scale2, -l0);
        s[n][1] = fmaf(s[n][1], scale2, -l1);
        s[n][2] = fmaf(s[n][2], scale2, -l0);
        s[n][3] = fmaf(s[n][3], scale2, -l1);
      }
      if (kFast || !additional) {
        const int4 tile = s_tile[st];
        if (tile.w) {
          const int qo[3] = {tile.x, tile.y, tile.z};
          MaskTable<BQ>::apply(&s[0][0], s_mask, qo, win, unsigned(tile.w), lane);
        }
      }
#pragma unroll
      for (int n = 0; n < BQ / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[n][e] = fast_exp2(s[n][e]);
      pv<T, HD, BQ>(dv, s, sO, lane);  // dV += P^T dO
      float dp[BQ / 8][4];
      qk<T, HD, BQ>(dp, sV, sO, warp, lane);  // dP^T = V dO^T
#pragma unroll
      for (int n = 0; n < BQ / 8; ++n) {
        const float2 d = lds64f(&s_stat[st][1][8 * n + c2]);
        s[n][0] *= dp[n][0] - d.x;
        s[n][1] *= dp[n][1] - d.y;
        s[n][2] *= dp[n][2] - d.x;
        s[n][3] *= dp[n][3] - d.y;
      }
      pv<T, HD, BQ>(dk, s, sQ, lane);  // dK += dS^T Q
    }
  };
  if (!additional && geo.vec) run(std::true_type{});
  else run(std::false_type{});

  const float sc = float(p.scale);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = r0 + 8 * r;
    T *gk, *gv;
    int64_t sdk, sdv;
    if (!additional) {
      int j[3];
      if (!bt.pos(geo, row, j)) continue;
      gk = static_cast<T*>(p.dk.data) + b * p.dk.sb + hk * p.dk.sh + tok_off(p.dk, p, bt.g, j);
      gv = static_cast<T*>(p.dv.data) + b * p.dv.sb + hk * p.dv.sh + tok_off(p.dv, p, bt.g, j);
      sdk = p.dk.sd;
      sdv = p.dv.sd;
    } else {
      if (a0 + row >= n_add) continue;
      gk = static_cast<T*>(p.d_add_k.data) + b * p.d_add_k.sb + hk * p.d_add_k.sh + (a0 + row) * p.d_add_k.sn;
      gv = static_cast<T*>(p.d_add_v.data) + b * p.d_add_v.sb + hk * p.d_add_v.sh + (a0 + row) * p.d_add_v.sn;
      sdk = p.d_add_k.sd;
      sdv = p.d_add_v.sd;
    }
    store_row<T, HD>(gk, sdk, int(p.head_dim), dk, r, sc, lane);
    store_row<T, HD>(gv, sdv, int(p.head_dim_v), dv, r, 1.f, lane);
  }
}

}  // namespace nhood::fused
