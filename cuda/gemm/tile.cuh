// Query tiles of the gemm kernels and the KV box they read.
//
// A tile is a box of up to 64 queries inside one dilation group per axis
// (group positions p0 .. p0+T-1). Window begin/end are monotone in the query
// position (nhood/window.hpp), so the keys of all its queries lie in one box
// of group positions [begin(p0), end(p_last)) per axis: the "union" that the
// tile's GEMMs run over. Keys past the union are the additional tokens.
#pragma once

#include <cstdint>

#include "nhood/detail/params.hpp"
#include "nhood/window.hpp"

namespace nhood::cuda::unfused {

constexpr int kTileQueries = 64;  // queries per tile (M of the GEMMs)
constexpr int kChunkKeys = 64;    // union keys per step (N of QK, K of AV)
constexpr int kWarps = 4;         // each warp owns 16 query rows
constexpr int kBlockThreads = kWarps * 32;

// Host-chosen tile shape and grid decomposition.
struct TileShape {
  int t[3];                 // queries per axis (product <= 64)
  int64_t per_group[3];     // tiles per dilation group per axis
  int64_t tiles[3];         // dilation * per_group
};

inline TileShape tile_shape(const detail::Params& p) {
  TileShape s;
  int non_unit = 0;
  for (int a = 0; a < 3; ++a) non_unit += p.axis[a].length > 1;
  int remaining = kTileQueries;
  for (int a = 2; a >= 0; --a) {  // innermost axes first
    int t = 1;
    if (p.axis[a].length > 1) t = non_unit == 1 ? 64 : 8;
    if (t > remaining) t = remaining;
    s.t[a] = t;
    remaining /= t;
  }
  for (int a = 0; a < 3; ++a) {
    const int64_t d = p.axis[a].dilation;
    const int64_t longest = (p.axis[a].length + d - 1) / d;
    s.per_group[a] = (longest + s.t[a] - 1) / s.t[a];
    s.tiles[a] = d * s.per_group[a];
  }
  return s;
}

// One axis of one tile, in group positions.
struct TileAxis {
  int64_t g, lg, p0, n;        // group, its length, first query position, queries in the tile
  int64_t begin, extent;       // union of the tile's windows
};

__device__ __forceinline__ bool tile_axis(const AxisWindow& a, const TileShape& s, int axis, int64_t tile,
                                          TileAxis& out) {
  out.g = tile / s.per_group[axis];
  out.p0 = (tile % s.per_group[axis]) * s.t[axis];
  if (out.g >= a.dilation) return false;
  out.lg = group_length(a, out.g);
  if (out.p0 >= out.lg) return false;
  out.n = detail::min64(s.t[axis], out.lg - out.p0);
  out.begin = window_in_group(a, out.p0, out.lg).begin;
  out.extent = window_in_group(a, out.p0 + out.n - 1, out.lg).end - out.begin;
  return true;
}

}  // namespace nhood::cuda::unfused
