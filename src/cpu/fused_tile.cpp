#include "fused_tile.hpp"

#include <utility>

namespace nhood::cpu::fused {

Params canonical(const Params& p) {
  Params c = p;
  int order[3], n = 0;
  for (int a = 0; a < 3; ++a)
    if (p.axis[a].length == 1) order[n++] = a;  // unit axes first...
  for (int a = 0; a < 3; ++a)
    if (p.axis[a].length != 1) order[n++] = a;  // ...then real ones, in order
  auto permute = [&](Operand& dst, const Operand& src) {
    const int64_t s[3] = {src.sx, src.sy, src.sz};
    dst.sx = s[order[0]];
    dst.sy = s[order[1]];
    dst.sz = s[order[2]];
  };
  for (int a = 0; a < 3; ++a) c.axis[a] = p.axis[order[a]];
  permute(c.q, p.q); permute(c.k, p.k); permute(c.v, p.v); permute(c.out, p.out); permute(c.lse, p.lse);
  permute(c.d_out, p.d_out); permute(c.dq, p.dq); permute(c.dk, p.dk); permute(c.dv, p.dv);
  return c;
}

std::vector<Span> axis_tiles(const AxisWindow& a, int64_t tile) {
  std::vector<Span> out;
  for (int64_t g = 0; g < a.dilation && g < a.length; ++g) {
    const int64_t lg = group_length(a, g);
    for (int64_t p0 = 0; p0 < lg; p0 += tile) out.push_back({g, p0, lg - p0 < tile ? lg - p0 : tile});
  }
  return out;
}

}  // namespace nhood::cpu::fused
