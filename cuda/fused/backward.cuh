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

template <class T, int HD>
constexpr int dkdv_smem_bytes() {
  return 6 * kRows * (HD + 8) * int(sizeof(T));
}

template <class T, int HD>
__global__ void __launch_bounds__(kThreads) dkdv_kernel(const Params p, const Geo geo) {
  constexpr int LD = HD + 8;
  constexpr int BQ = 64;
  extern __shared__ __align__(16) unsigned char smem[];
  T* sK = reinterpret_cast<T*>(smem);
  T* sV = sK + kRows * LD;
  T* sQ0 = sV + kRows * LD;  // [2][BQ][LD]
  T* sO0 = sQ0 + 2 * BQ * LD;
  __shared__ int s_win[2][BQ][6];
  __shared__ float s_lse[2][BQ], s_delta[2][BQ];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int b = blockIdx.z, hk = blockIdx.y;
  const int G = int(p.heads / p.heads_kv);
  const bool additional = int(blockIdx.x) >= geo.n_spatial_blocks;
  const int n_add = int(p.n_additional);

  BlockTile bt;  // spatial keys
  int a0 = 0;    // additional keys
  int qb[3] = {0, 0, 0}, qe[3] = {0, 0, 0}, nq[3];
  if (!additional) {
    if (!bt.init(p, geo, blockIdx.x)) return;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      qb[a] = int(inverse_window_in_group(p.axis[a], bt.p0[a], bt.lg[a]).begin);
      qe[a] = int(inverse_window_in_group(p.axis[a], bt.pend[a] - 1, bt.lg[a]).end);
      nq[a] = max(0, ceil_div(qe[a] - qb[a], geo.u[a]));
    }
  } else {
    a0 = (int(blockIdx.x) - geo.n_spatial_blocks) * kRows;
#pragma unroll
    for (int a = 0; a < 3; ++a) nq[a] = p.axis[a].dilation * geo.add_tiles_per_group[a];
  }
  const int nqt = nq[0] * nq[1] * nq[2];
  const int total = G * nqt;

  // Query tile `i`: head, dilation group, origin and valid end per axis.
  struct QTile {
    int h, g[3], qo[3], qend[3], lg[3];
  };
  auto qtile = [&](int i) {
    QTile t;
    t.h = hk * G + i / nqt;
    const int qi = i % nqt;
    int ia[3];
    ia[2] = qi % nq[2];
    ia[1] = (qi / nq[2]) % nq[1];
    ia[0] = qi / (nq[2] * nq[1]);
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      if (!additional) {
        t.g[a] = bt.g[a];
        t.lg[a] = bt.lg[a];
        t.qo[a] = qb[a] + ia[a] * geo.u[a];
        t.qend[a] = qe[a];
      } else {
        t.g[a] = ia[a] / geo.add_tiles_per_group[a];
        t.lg[a] = int(group_length(p.axis[a], t.g[a]));
        t.qo[a] = (ia[a] % geo.add_tiles_per_group[a]) * geo.u[a];
        t.qend[a] = t.lg[a];
      }
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
  auto load_q = [&](int i, int buf) {
    const QTile t = qtile(i);
    if (threadIdx.x < BQ) {
      int q[3];
      const bool ok = qpos(t, threadIdx.x, q);
#pragma unroll
      for (int a = 0; a < 3; ++a) {
        const IndexRange w = window_in_group(p.axis[a], ok ? q[a] : 0, t.lg[a]);
        s_win[buf][threadIdx.x][2 * a] = ok ? int(w.begin) : 1;
        s_win[buf][threadIdx.x][2 * a + 1] = ok ? int(w.end) : 0;
      }
      float lse = INFINITY, delta = 0.f;  // padding rows: P = exp2(s - inf) = 0
      if (ok) {
        lse = static_cast<const float*>(p.lse.data)[b * p.lse.sb + t.h * p.lse.sh + tok_off(p.lse, p, t.g, q)] *
              kLog2e;
        delta = geo.delta[row_index(p, b, t.g, q, t.h)];
      }
      s_lse[buf][threadIdx.x] = lse;
      s_delta[buf][threadIdx.x] = delta;
    }
    auto rowfn = [&](const Operand& o) {
      return [&, o](int r, int64_t& off) {
        int q[3];
        const bool ok = qpos(t, r, q);
        off = tok_off(o, p, t.g, q);
        return ok;
      };
    };
    load_rows<HD, BQ>(sQ0 + buf * BQ * LD, static_cast<const T*>(p.q.data) + b * p.q.sb + t.h * p.q.sh, p.q.sd,
                      int(p.head_dim), geo.vec, rowfn(p.q));
    load_rows<HD, BQ>(sO0 + buf * BQ * LD, static_cast<const T*>(p.d_out.data) + b * p.d_out.sb + t.h * p.d_out.sh,
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
  if (total > 0) load_q(0, 0);
  cp_async_commit();

  // This thread's two key rows (spatial positions).
  const int r0 = warp * 16 + lane / 4;
  int kj[2][3];
  if (!additional) {
#pragma unroll
    for (int r = 0; r < 2; ++r) bt.pos(geo, r0 + 8 * r, kj[r]);
  }
  float dk[HD / 8][4], dv[HD / 8][4];
#pragma unroll
  for (int n = 0; n < HD / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.f;
  const float scale2 = float(p.scale) * kLog2e;

  for (int it = 0; it < total; ++it) {
    cp_async_wait_all();
    __syncthreads();
    const int buf = it & 1;
    if (it + 1 < total) load_q(it + 1, buf ^ 1);
    cp_async_commit();
    const T* sQ = sQ0 + buf * BQ * LD;
    const T* sO = sO0 + buf * BQ * LD;

    bool full = true;  // every valid key of the block inside every valid query's window
    if (!additional) {
      const QTile t = qtile(it);
#pragma unroll
      for (int a = 0; a < 3; ++a) {
        const int qv = min(t.qo[a] + geo.u[a], t.qend[a]);
        const IndexRange wl = window_in_group(p.axis[a], qv - 1, t.lg[a]);
        const IndexRange wf = window_in_group(p.axis[a], t.qo[a], t.lg[a]);
        full = full && bt.p0[a] >= wl.begin && bt.pend[a] <= wf.end;
      }
    }

    float s[BQ / 8][4];
    qk<T, HD, BQ>(s, sK, sQ, warp, lane);  // S^T = K Q^T
#pragma unroll
    for (int n = 0; n < BQ / 8; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int col = n * 8 + (lane & 3) * 2 + e;
        const float l2 = s_lse[buf][col];
        bool in[2] = {true, true};
        if (!full) {
          const int* w = s_win[buf][col];
#pragma unroll
          for (int r = 0; r < 2; ++r)
            in[r] = w[0] <= kj[r][0] && kj[r][0] < w[1] && w[2] <= kj[r][1] && kj[r][1] < w[3] && w[4] <= kj[r][2] &&
                    kj[r][2] < w[5];
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) s[n][2 * r + e] = in[r] ? fast_exp2(s[n][2 * r + e] * scale2 - l2) : 0.f;
      }
    pv<T, HD, BQ>(dv, s, sO, lane);  // dV += P^T dO
    float dp[BQ / 8][4];
    qk<T, HD, BQ>(dp, sV, sO, warp, lane);  // dP^T = V dO^T
#pragma unroll
    for (int n = 0; n < BQ / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = n * 8 + (lane & 3) * 2 + (e & 1);
        s[n][e] *= dp[n][e] - s_delta[buf][col];
      }
    pv<T, HD, BQ>(dk, s, sQ, lane);  // dK += dS^T Q
  }

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
#pragma unroll
    for (int n = 0; n < HD / 8; ++n) {
      const int d = n * 8 + (lane & 3) * 2;
      if (d < p.head_dim) gk[d * sdk] = from_float<T>(dk[n][2 * r] * sc);
      if (d + 1 < p.head_dim) gk[(d + 1) * sdk] = from_float<T>(dk[n][2 * r + 1] * sc);
      if (d < p.head_dim_v) gv[d * sdv] = from_float<T>(dv[n][2 * r]);
      if (d + 1 < p.head_dim_v) gv[(d + 1) * sdv] = from_float<T>(dv[n][2 * r + 1]);
    }
  }
}

}  // namespace nhood::fused
