// Forward kernel of the fused backend: a block of 64 * MI queries walks its
// KV neighborhood box (then the additional KV tokens) in inner tiles of BK
// keys through a ring of cp.async stages. The KV tile loads and the MMA
// helpers here serve the dQ kernel (dq.cuh) too.
#pragma once

#include <cmath>
#include <type_traits>

#include "tile_rows.cuh"
#include "tile_walk.cuh"

namespace nhood::fused {

// Issues the loads of KV inner tile `it` into sK/sV. Spatial tiles come in
// walk order from `cursor`; thread 0 records the tile's origin and partial
// axes in *tile for the step that masks it. `rows`: the spatial fast path
// (aligned operands).
template <class T, int HD, int BK>
__device__ __forceinline__ void load_kv(const Params& p, const Geo& geo, const BlockTile& bt, const KvWalk& kw, int it,
                                        TileCursor& cursor, int4* tile, const TileRows<BK>& rows, int b, int hk, T* sK,
                                        T* sV) {
  int j0[3] = {0, 0, 0};
  if (it < kw.n_spatial) {
    cursor.origin(geo, kw, j0);
    cursor.advance(kw);
    if (threadIdx.x == 0) *tile = make_int4(j0[0], j0[1], j0[2], int(partial_axes(geo, kw, j0)));
  }
  if (it < kw.n_spatial && geo.vec) {
    rows.template load<HD>(p, bt.g, j0, kw.ke, sK, static_cast<const T*>(p.k.data) + b * p.k.sb + hk * p.k.sh, p.k,
                           int(p.head_dim), sV, static_cast<const T*>(p.v.data) + b * p.v.sb + hk * p.v.sh, p.v,
                           int(p.head_dim_v));
  } else if (it < kw.n_spatial) {
    auto rowfn = [&](const Operand& o) {
      return [&, o](int r, int64_t& off) {
        int j[3];
        bool ok = true;
#pragma unroll
        for (int a = 0; a < 3; ++a) {
          j[a] = j0[a] + ((r >> geo.ush[a]) & (geo.u[a] - 1));
          ok = ok && j[a] < kw.ke[a];
        }
        off = tok_off(o, p, bt.g, j);
        return ok;
      };
    };
    const T* gk = static_cast<const T*>(p.k.data) + b * p.k.sb + hk * p.k.sh;
    const T* gv = static_cast<const T*>(p.v.data) + b * p.v.sb + hk * p.v.sh;
    load_rows<HD, BK>(sK, gk, p.k.sd, int(p.head_dim), geo.vec, rowfn(p.k));
    load_rows<HD, BK>(sV, gv, p.v.sd, int(p.head_dim_v), geo.vec, rowfn(p.v));
  } else {
    const int a0 = (it - kw.n_spatial) * BK;
    const int n = int(p.n_additional);
    const T* gk = static_cast<const T*>(p.add_k.data) + b * p.add_k.sb + hk * p.add_k.sh;
    const T* gv = static_cast<const T*>(p.add_v.data) + b * p.add_v.sb + hk * p.add_v.sh;
    const int64_t snk = p.add_k.sn, snv = p.add_v.sn;
    load_rows<HD, BK>(sK, gk, p.add_k.sd, int(p.head_dim), geo.vec, [&](int r, int64_t& off) {
      off = (a0 + r) * snk;
      return a0 + r < n;
    });
    load_rows<HD, BK>(sV, gv, p.add_v.sd, int(p.head_dim_v), geo.vec, [&](int r, int64_t& off) {
      off = (a0 + r) * snv;
      return a0 + r < n;
    });
  }
}

// Forward, MI m-tiles of 16 rows per warp (rows row0 + 16 i): each K/V
// fragment read from shared memory feeds MI MMAs (shared-memory bandwidth,
// not the tensor cores, bounds the 16-row version).
template <class T, int HD, int BK, int MI>
__device__ __forceinline__ void qk_mi(float (*s)[BK / 8][4], const T* sA, const T* sB, int row0, int lane) {
  constexpr int LD = HD + 8;
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int n = 0; n < BK / 8; ++n) s[i][n][0] = s[i][n][1] = s[i][n][2] = s[i][n][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) {
    uint32_t a[MI][4];
#pragma unroll
    for (int i = 0; i < MI; ++i) ldsm4(a[i], a_addr<LD>(sA, row0 + 16 * i, kk * 16, lane));
#pragma unroll
    for (int np = 0; np < BK / 16; ++np) {
      uint32_t bb[4];
      ldsm4(bb, b_addr<LD>(sB, np * 16, kk * 16, lane));
#pragma unroll
      for (int i = 0; i < MI; ++i) {
        mma<T>(s[i][2 * np], a[i], bb[0], bb[1]);
        mma<T>(s[i][2 * np + 1], a[i], bb[2], bb[3]);
      }
    }
  }
}

template <class T, int HD, int BK, int MI>
__device__ __forceinline__ void pv_mi(float (*acc)[HD / 8][4], const float (*s)[BK / 8][4], const T* sB, int lane) {
  constexpr int LD = HD + 8;
#pragma unroll
  for (int kk = 0; kk < BK / 16; ++kk) {
    uint32_t a[MI][4];
#pragma unroll
    for (int i = 0; i < MI; ++i) {
      a[i][0] = pack2<T>(s[i][2 * kk][0], s[i][2 * kk][1]);
      a[i][1] = pack2<T>(s[i][2 * kk][2], s[i][2 * kk][3]);
      a[i][2] = pack2<T>(s[i][2 * kk + 1][0], s[i][2 * kk + 1][1]);
      a[i][3] = pack2<T>(s[i][2 * kk + 1][2], s[i][2 * kk + 1][3]);
    }
#pragma unroll
    for (int np = 0; np < HD / 16; ++np) {
      uint32_t bb[4];
      ldsm4t(bb, bt_addr<LD>(sB, kk * 16, np * 16, lane));
#pragma unroll
      for (int i = 0; i < MI; ++i) {
        mma<T>(acc[i][2 * np], a[i], bb[0], bb[1]);
        mma<T>(acc[i][2 * np + 1], a[i], bb[2], bb[3]);
      }
    }
  }
}

// S = Q K^T for this warp's 16 rows x BK keys (fp32 accumulators).
template <class T, int HD, int BK>
__device__ __forceinline__ void qk(float (*s)[4], const T* sA, const T* sB, int warp, int lane) {
  constexpr int LD = HD + 8;
#pragma unroll
  for (int n = 0; n < BK / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) {
    uint32_t a[4];
    ldsm4(a, a_addr<LD>(sA, warp * 16, kk * 16, lane));
#pragma unroll
    for (int np = 0; np < BK / 16; ++np) {
      uint32_t bb[4];
      ldsm4(bb, b_addr<LD>(sB, np * 16, kk * 16, lane));
      mma<T>(s[2 * np], a, bb[0], bb[1]);
      mma<T>(s[2 * np + 1], a, bb[2], bb[3]);
    }
  }
}

// acc(16 x HD) += P(16 x BK, registers) @ sB([BK][HD] tile).
template <class T, int HD, int BK>
__device__ __forceinline__ void pv(float (*acc)[4], const float (*s)[4], const T* sB, int lane) {
  constexpr int LD = HD + 8;
#pragma unroll
  for (int kk = 0; kk < BK / 16; ++kk) {
    uint32_t a[4];
    a[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
    a[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
    a[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    a[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
    for (int np = 0; np < HD / 16; ++np) {
      uint32_t bb[4];
      ldsm4t(bb, bt_addr<LD>(sB, kk * 16, np * 16, lane));
      mma<T>(acc[2 * np], a, bb[0], bb[1]);
      mma<T>(acc[2 * np + 1], a, bb[2], bb[3]);
    }
  }
}

template <int BK>
__device__ __forceinline__ void mask_additional(float (*s)[4], int a0, int n_add, int lane) {
#pragma unroll
  for (int n = 0; n < BK / 8; ++n)
#pragma unroll
    for (int e = 0; e < 2; ++e)
      if (a0 + n * 8 + (lane & 3) * 2 + e >= n_add) s[n][e] = s[n][2 + e] = -INFINITY;
}

// Forward epilogue of accumulator row r (of a thread's two) at group
// position q: l summed over the row's 4 lanes, O / l stored, and the LSE
// (natural log) when asked for. Every lane calls it (shuffles); ok: the row
// is a real token.
template <class T, int HD>
__device__ __forceinline__ void store_out_row(const Params& p, const int* g, const int* q, bool ok, int b, int h,
                                              const float (*o)[4], int r, float l, float m, int lane) {
  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);
  if (!ok) return;
  const float inv = l > 0.f ? 1.f / l : 0.f;
  T* go = static_cast<T*>(p.out.data) + b * p.out.sb + h * p.out.sh + tok_off(p.out, p, g, q);
  store_row<T, HD>(go, p.out.sd, int(p.head_dim_v), o, r, inv, lane);
  if (p.lse.data && (lane & 3) == 0) {
    float* gl = static_cast<float*>(p.lse.data) + b * p.lse.sb + h * p.lse.sh + tok_off(p.lse, p, g, q);
    *gl = (m + log2f(l)) * 0.69314718055994531f;
  }
}

// KV ring depth of the forward: as deep as fits without costing a block per
// SM (registers allow 4 blocks at head dim 32, 3 at 64, 2 at 128 and 256;
// shared memory at 128 then holds two 64-key stages), so a tile's loads have
// NST - 1 steps of MMAs to arrive from L2.
template <int HD>
__host__ __device__ constexpr int fwd_stages() {
  return HD == 32 ? 4 : HD >= 128 ? 2 : 3;
}

template <class T, int HD, int BK, int MI>
constexpr int fwd_smem_bytes() {
  return (kRows * MI + 2 * fwd_stages<HD>() * BK) * (HD + 8) * int(sizeof(T));
}

template <class T, int HD, int BK, int MI>
__global__ void __launch_bounds__(kThreads) forward_kernel(const Params p, const Geo geo) {
  constexpr int LD = HD + 8;
  constexpr int BQ = kRows * MI;
  constexpr int NST = fwd_stages<HD>();
  extern __shared__ __align__(16) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem);
  T* sK0 = sQ + BQ * LD;  // [NST][BK][LD]
  T* sV0 = sK0 + NST * BK * LD;
  __shared__ int s_win[BQ][6];
  __shared__ int4 s_tile[NST];  // per stage: the tile's origin and its partial axes (bits)
  __shared__ TileRows<BK> rows;
  __shared__ __align__(16) uint32_t s_mask[MaskTable<BK>::kBytes / 4];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int b = blockIdx.z, h = blockIdx.y, hk = geo.kv_group.div(h);
  BlockTile bt;
  if (!bt.init(p, geo, blockIdx.x)) return;
  KvWalk kw;
  kw.init(p, geo, bt, BK);

  // Loads first (Q, then the first NST - 1 tiles), so their latency covers
  // the per-row windows below: with 4-step blocks (7x7 vision) the prologue
  // is a large part of a block's time.
  {
    const T* gq = static_cast<const T*>(p.q.data) + b * p.q.sb + h * p.q.sh;
    load_rows<HD, BQ>(sQ, gq, p.q.sd, int(p.head_dim), geo.vec, [&](int r, int64_t& off) {
      int q[3];
      const bool ok = bt.pos(geo, r, q);
      off = tok_off(p.q, p, bt.g, q);
      return ok;
    });
  }
  MaskTable<BK>::build(s_mask, geo);
  rows.build(p, geo, p.k, p.v);
  __syncthreads();
  // Tile `it` goes to stage it % NST; the loads run NST - 1 tiles ahead of
  // the MMAs, one cp.async group per tile (the first also holds Q).
  TileCursor cursor;
  auto issue = [&](int it) {
    const int st = it % NST;
    load_kv<T, HD, BK>(p, geo, bt, kw, it, cursor, &s_tile[st], rows, b, hk, sK0 + st * BK * LD, sV0 + st * BK * LD);
  };
#pragma unroll
  for (int it = 0; it < NST - 1; ++it) {
    if (it < kw.n_total) issue(it);
    cp_async_commit();
  }
  // Read only after the first step's barrier.
  for (int r = threadIdx.x; r < BQ; r += kThreads) {
    int q[3];
    const bool ok = bt.pos(geo, r, q);
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      const IndexRange w = window_in_group(p.axis[a], q[a], bt.lg[a]);
      s_win[r][2 * a] = ok ? int(w.begin) : 1;
      s_win[r][2 * a + 1] = ok ? int(w.end) : 0;
    }
  }

  const int row0 = warp * 16 * MI;  // this warp's first row; thread rows row0 + 16 i + lane/4 (+8)
  float o[MI][HD / 8][4];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int n = 0; n < HD / 8; ++n) o[i][n][0] = o[i][n][1] = o[i][n][2] = o[i][n][3] = 0.f;
  float m[MI][2], l[MI][2];
#pragma unroll
  for (int i = 0; i < MI; ++i) m[i][0] = m[i][1] = -INFINITY, l[i][0] = l[i][1] = 0.f;
  // The scale is folded into the exponent's FMA (max over raw logits) when
  // positive; other scales multiply S first, as the max must see the product.
  const float scale2 = float(p.scale) * kLog2e;
  const bool premul = !(scale2 > 0.f);
  const float fold = premul ? 1.f : scale2;

  for (int it = 0; it < kw.n_total; ++it) {
    cp_async_wait<NST - 2>();  // tile it has landed (groups complete in order)
    __syncthreads();           // ... for every thread; and stage (it - 1) % NST is free
    if (it + NST - 1 < kw.n_total) issue(it + NST - 1);
    cp_async_commit();
    const int st = it % NST;
    const T* sK = sK0 + st * BK * LD;
    const T* sV = sV0 + st * BK * LD;

    float s[MI][BK / 8][4];
    qk_mi<T, HD, BK, MI>(s, sQ, sK, row0, lane);
    if (premul)
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int n = 0; n < BK / 8; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[i][n][e] *= scale2;
    if (it < kw.n_spatial) {
      const int4 tile = s_tile[st];
      if (tile.w) {
        const int j0[3] = {tile.x, tile.y, tile.z};
#pragma unroll
        for (int i = 0; i < MI; ++i) {
          int win[2][6];
#pragma unroll
          for (int r = 0; r < 2; ++r)
#pragma unroll
            for (int c = 0; c < 6; ++c) win[r][c] = s_win[row0 + 16 * i + lane / 4 + 8 * r][c];
          MaskTable<BK>::apply(&s[i][0][0], s_mask, j0, win, unsigned(tile.w), lane);
        }
      }
    } else {
      const int a0 = (it - kw.n_spatial) * BK;
      if (a0 + BK > p.n_additional)
#pragma unroll
        for (int i = 0; i < MI; ++i) mask_additional<BK>(s[i], a0, int(p.n_additional), lane);
    }
    // Online softmax (log2 domain); each row lives in 4 lanes.
    float mx[MI][2];
    bool grow = false;
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float t[BK / 8];
#pragma unroll
        for (int n = 0; n < BK / 8; ++n) t[n] = fmaxf(s[i][n][2 * r], s[i][n][2 * r + 1]);
        float x = tree_reduce<BK / 8>(t, [](float u, float v) { return fmaxf(u, v); });
        x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
        x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
        mx[i][r] = x * fold;
        grow = grow || mx[i][r] > m[i][r] + kRescaleSlack;
      }
    if (__any_sync(0xffffffffu, grow)) {
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const float mnew = fmaxf(m[i][r], mx[i][r]);
          const float alpha = fast_exp2(m[i][r] - (mnew == -INFINITY ? 0.f : mnew));
          m[i][r] = mnew;
          l[i][r] *= alpha;
#pragma unroll
          for (int n = 0; n < HD / 8; ++n) {
            o[i][n][2 * r] *= alpha;
            o[i][n][2 * r + 1] *= alpha;
          }
        }
    }
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const float base = m[i][r] == -INFINITY ? 0.f : m[i][r];
        float t[BK / 8];
#pragma unroll
        for (int n = 0; n < BK / 8; ++n) {
          s[i][n][2 * r] = fast_exp2(fmaf(s[i][n][2 * r], fold, -base));
          s[i][n][2 * r + 1] = fast_exp2(fmaf(s[i][n][2 * r + 1], fold, -base));
          t[n] = s[i][n][2 * r] + s[i][n][2 * r + 1];
        }
        l[i][r] += tree_reduce<BK / 8>(t, [](float u, float v) { return u + v; });
      }
    pv_mi<T, HD, BK, MI>(o, s, sV, lane);
  }

#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      int q[3];
      const bool ok = bt.pos(geo, row0 + 16 * i + lane / 4 + 8 * r, q);
      store_out_row<T, HD>(p, bt.g, q, ok, b, h, o[i], r, l[i][r], m[i][r], lane);
    }
}

}  // namespace nhood::fused
