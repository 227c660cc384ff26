// Host-side tiling of the box-tiled kernels (fused, and the hopper backend
// that reuses its geometry): the block tile of queries (or keys) and the
// inner tile that walks its neighborhood box, both chosen at run time.
#pragma once

#include <algorithm>
#include <cstdint>

#include "fused.cuh"

namespace nhood::fused {

inline int log2i(int x) {
  int s = 0;
  while ((1 << s) < x) ++s;
  return s;
}
inline int64_t next_pow2(int64_t x) {
  int64_t v = 1;
  while (v < x) v *= 2;
  return v;
}
// Shifts that split a row index of a box of power-of-two `shape` (z fastest)
// into coordinates: c_a = (r >> sh[a]) & (shape[a] - 1).
inline void row_shifts(const int* shape, int* sh) {
  sh[2] = 0, sh[1] = log2i(shape[2]), sh[0] = log2i(shape[2] * shape[1]);
}
inline int64_t group_len_max(const AxisWindow& a) { return (a.length + a.dilation - 1) / a.dilation; }
// Extent bound along axis a of the union of the windows of n consecutive
// group positions (the neighborhood box of a block tile n long): window
// starts are non-decreasing and differ by at most (n - 1) + (stride - 1)
// (stride groups share a leader), ends are starts + k (causal: ends <= last
// position + 1).
inline int64_t window_union_extent(const AxisWindow& a, int n) {
  return std::min<int64_t>(a.kernel + n - 1 + a.stride - 1, group_len_max(a));
}

// Block tile: `total` tokens as a box, doubling the axis whose neighborhood
// box (the union of its rows' windows, strides included) grows least, never
// past the group length. Ties go to the innermost axis, or with `slow_ties`
// to the outermost (for the hopper backward, which picks between the two:
// half_block_tiles below).
inline void block_tile(const Params& p, int total, int* t, bool slow_ties = false) {
  t[0] = t[1] = t[2] = 1;
  for (int step = 0; step < log2i(total); ++step) {
    int best = -1;
    double best_growth = 0;
    for (int i = 0; i < 3; ++i) {
      const int a = slow_ties ? i : 2 - i;
      if (2 * t[a] > next_pow2(group_len_max(p.axis[a]))) continue;
      const double growth = double(window_union_extent(p.axis[a], 2 * t[a])) / window_union_extent(p.axis[a], t[a]);
      if (best < 0 || growth < best_growth) best = a, best_growth = growth;
    }
    if (best < 0) best = 2;  // tiny problem: padding rows
    t[best] *= 2;
  }
}

// Tiles of extent u along an axis of box extent e (windows of k) that lie
// inside every row's range: the ranges of a block start at offsets 0 ..
// e - k of its box, so their intersection is [e - k, k).
inline int64_t inside_tiles(int64_t e, int64_t k, int u) {
  const int64_t first = (e - k + u - 1) / u, end = k / u;  // tiles [first, end)
  return std::max<int64_t>(end - first, 0);
}

// Inner tile of `total` tokens covering a box of extents e (windows of
// extents k) with the least padding; among those, the one with the most
// tiles inside every row's window (they skip the mask: the box of an
// interior 8x16 block with 80x80 windows has 55% of its 8x16 tiles inside,
// 27% of its 4x32 tiles; the squarer tiles also fit the smaller boxes at the
// borders); then the longer innermost (contiguous) extent. With
// `slack_pct`, tiles up to that many percent more padded than the least
// compete on the mask-free count too (the hopper backward: see
// backward_geometry in cuda/hopper/backend.cu).
inline void inner_tile(const int64_t* e, const int64_t* k, int total, int* u, int slack_pct = 0) {
  const int lt = log2i(total);
  // f(shape, padded box volume, mask-free tiles) for every power-of-two shape of `total` tokens.
  auto for_each_shape = [&](auto&& f) {
    for (int a = 0; a <= lt; ++a)
      for (int b = 0; a + b <= lt; ++b) {
        const int s[3] = {1 << a, 1 << b, 1 << (lt - a - b)};
        int64_t cost = 1, inside = 1;
        for (int i = 0; i < 3; ++i) {
          cost *= (e[i] + s[i] - 1) / s[i] * s[i];
          inside *= inside_tiles(e[i], std::min(k[i], e[i]), s[i]);
        }
        f(s, cost, inside);
      }
  };
  int64_t least = -1;
  for_each_shape([&](const int*, int64_t cost, int64_t) {
    if (least < 0 || cost < least) least = cost;
  });
  int64_t best_cost = -1, best_inside = -1;
  for_each_shape([&](const int* s, int64_t cost, int64_t inside) {
    if (100 * cost > (100 + slack_pct) * least) return;
    if (best_cost < 0 || inside > best_inside || (inside == best_inside && cost < best_cost) ||
        (inside == best_inside && cost == best_cost && s[2] > u[2])) {
      best_cost = cost, best_inside = inside;
      u[0] = s[0], u[1] = s[1], u[2] = s[2];
    }
  });
}

inline bool aligned(const void* ptr, const int64_t* strides, int n) {
  if (reinterpret_cast<uintptr_t>(ptr) % 16) return false;
  for (int i = 0; i < n; ++i)
    if (strides[i] % 8) return false;
  return true;
}
inline bool vec_ok(const Operand& o) {
  if (!o.data) return true;
  const int64_t s[5] = {o.sb, o.sx, o.sy, o.sz, o.sh};
  return o.sd == 1 && aligned(o.data, s, 5);
}
inline bool vec_ok(const TokenOperand& o) {
  if (!o.data) return true;
  const int64_t s[3] = {o.sb, o.sn, o.sh};
  return o.sd == 1 && aligned(o.data, s, 3);
}

// inner_total: keys per inner tile (forward/dQ) or queries (dK/dV).
inline Geo make_geo(const Params& p, int block_total, int inner_total, bool backward_ops, bool slow_ties = false,
                    int slack_pct = 0) {
  Geo g{};
  block_tile(p, block_total, g.t, slow_ties);
  int64_t e[3], k[3];
  for (int a = 0; a < 3; ++a) {
    e[a] = window_union_extent(p.axis[a], g.t[a]);
    k[a] = p.axis[a].kernel;
  }
  inner_tile(e, k, inner_total, g.u, slack_pct);
  for (int a = 0; a < 3; ++a)  // the largest power of two <= k: a non-causal box (>= k positions) holds a multiple
    g.walk_shift[a] = p.axis[a].causal || k[a] < g.u[a] ? 0 : log2i(int(k[a]) + 1) - 1;
  row_shifts(g.t, g.tsh);
  row_shifts(g.u, g.ush);
  g.n_spatial_blocks = 1;
  int tiles[3];
  for (int a = 0; a < 3; ++a) {
    const int64_t lg = group_len_max(p.axis[a]);
    const int per_group = int((lg + g.t[a] - 1) / g.t[a]);
    tiles[a] = p.axis[a].dilation * per_group;
    g.add_tiles_per_group[a] = int((lg + g.u[a] - 1) / g.u[a]);
    g.n_spatial_blocks *= tiles[a];
    g.tpg_div[a] = FastDiv(per_group);
  }
  g.tiles_div[0] = FastDiv(tiles[2]);
  g.tiles_div[1] = FastDiv(tiles[1]);
  g.kv_group = FastDiv(int(p.heads / p.heads_kv));
  g.vec = vec_ok(p.q) && vec_ok(p.k) && vec_ok(p.v) && vec_ok(p.add_k) && vec_ok(p.add_v) && p.head_dim % 8 == 0 &&
          p.head_dim_v % 8 == 0;
  if (backward_ops) g.vec = g.vec && vec_ok(p.d_out);
  g.delta = nullptr;
  return g;
}

// The axis along which the hopper kernels halve a block tile (one half per
// consumer warpgroup): its slowest axis longer than 1, so each half is a box
// of consecutive rows.
inline int half_axis(const Geo& g) {
  int a = 0;
  while (a < 2 && g.t[a] == 1) ++a;
  return a;
}

// Ring tiles an interior block's half needs (the more of its two halves):
// the hopper backward's consumers each own half of the block's rows, split
// along the slowest axis of the block tile, and skip the tiles outside their
// half's windows. E.g. 2-D 80x80 windows: a 16x8 block's halves need 121 of
// its 132 8x8 tiles, an 8x16 block's (4x16 tiles) 126 of 132.
inline int64_t half_block_tiles(const Params& p, const Geo& g) {
  const int split = half_axis(g);
  int64_t need = 1;
  for (int a = 0; a < 3; ++a) {
    const int64_t e = window_union_extent(p.axis[a], g.t[a]);
    const int64_t n = (e + g.u[a] - 1) / g.u[a];
    int64_t most = n;
    if (a == split && g.t[a] > 1) {
      most = 0;
      for (int h = 0; h < 2; ++h) {  // the half's windows cover about [lo, lo + their union's extent) of the box
        const int64_t lo = h * g.t[a] / 2, hi = std::min(e, lo + window_union_extent(p.axis[a], g.t[a] / 2));
        most = std::max(most, (hi + g.u[a] - 1) / g.u[a] - lo / g.u[a]);
      }
    }
    need *= most;
  }
  return need;
}

// Sets up the small-window forward (small.cuh) on top of a forward geometry
// with 64-token block tiles; false when the problem does not qualify: no
// additional tokens, 16-byte loads, a block tile spanning two or more axes,
// a block's KV box within kSmallBoxRows
// rows (each extent rounded up to a power of two, < 128) and a warp's
// within kSmallWarpKeys keys. Warp tiles: the block tile halved twice, each
// time along the axis whose warp key box shrinks most.
inline bool small_window_geo(const Params& p, Geo& g) {
  if (p.n_additional > 0 || !g.vec) return false;
  // Block tiles along one axis (1-D problems) fill at most half the tile,
  // and the general walk wastes little there: measured 3% slower (k = 31).
  if ((g.t[0] > 1) + (g.t[1] > 1) + (g.t[2] > 1) < 2) return false;
  int w[3] = {g.t[0], g.t[1], g.t[2]};
  for (int step = 0; step < 2; ++step) {
    int best = -1;
    double best_ratio = 2;
    for (int a = 0; a < 3; ++a) {
      if (w[a] < 2) continue;
      const double ratio = double(window_union_extent(p.axis[a], w[a] / 2)) / window_union_extent(p.axis[a], w[a]);
      if (ratio < best_ratio) best = a, best_ratio = ratio;
    }
    if (best < 0) return false;
    w[best] /= 2;
  }
  int64_t warp_keys = 1, box_rows = 1;
  int u[3];
  for (int a = 0; a < 3; ++a) {
    warp_keys *= window_union_extent(p.axis[a], w[a]);
    const int64_t box = window_union_extent(p.axis[a], g.t[a]);
    if (box >= 128) return false;
    u[a] = int(next_pow2(box));
    box_rows *= u[a];
  }
  if (warp_keys > kSmallWarpKeys || box_rows > kSmallBoxRows) return false;  // g is left as it was
  while (box_rows < kSmallBoxRows) {  // fill the tile (rows past the box are zero-filled, never read)
    int a = 0;
    for (int c = 1; c < 3; ++c)
      if (u[c] < u[a]) a = c;
    u[a] *= 2;
    box_rows *= 2;
  }
  for (int a = 0; a < 3; ++a) g.u[a] = u[a];
  row_shifts(g.u, g.ush);
  int grid[3];
  for (int a = 0; a < 3; ++a) {
    g.wlog[a] = log2i(w[a]);
    grid[a] = g.t[a] / w[a];
    g.wgmask[a] = grid[a] - 1;
  }
  row_shifts(w, g.wsh);
  row_shifts(grid, g.wgsh);
  return true;
}

}  // namespace nhood::fused
