// The `fused` backend row: support checks, host-side tiling choice and the
// (dtype, head-dim bucket) switch. Kernels: forward.cuh, backward.cuh.
#include <cuda_runtime.h>

#include <string>

#include "../../src/backend.hpp"
#include "../common/check.cuh"
#include "../common/device_guard.cuh"
#include "../common/workspace.cuh"
#include "fused.cuh"  // declarations only: kernels are instantiated in inst_*.cu

namespace nhood::fused {

template <class T, int HD, int MI> void launch_forward(const Params&, const Geo&, cudaStream_t);
template <class T, int HD> void launch_delta(const Params&, float*, cudaStream_t);
template <class T, int HD> void launch_dq(const Params&, const Geo&, cudaStream_t);
template <class T, int HD> void launch_dkdv(const Params&, const Geo&, cudaStream_t);

namespace {

int log2i(int x) {
  int s = 0;
  while ((1 << s) < x) ++s;
  return s;
}
int64_t next_pow2(int64_t x) {
  int64_t v = 1;
  while (v < x) v *= 2;
  return v;
}
int64_t group_len_max(const AxisWindow& a) { return (a.length + a.dilation - 1) / a.dilation; }

// Block tile: 64 tokens as a box, doubling the axis whose neighborhood box
// grows least (relative to its kernel), never past the group length.
void block_tile(const Params& p, int total, int* t) {
  t[0] = t[1] = t[2] = 1;
  for (int step = 0; step < log2i(total); ++step) {
    int best = -1;
    double best_growth = 0;
    for (int a = 2; a >= 0; --a) {
      if (2 * t[a] > next_pow2(group_len_max(p.axis[a]))) continue;
      const double k = p.axis[a].kernel;
      const double growth = (k + 2.0 * t[a] - 1) / (k + t[a] - 1);
      if (best < 0 || growth < best_growth) best = a, best_growth = growth;
    }
    if (best < 0) best = 2;  // tiny problem: padding rows
    t[best] *= 2;
  }
}

// Inner tile of `total` tokens covering a box of extents e with the least
// padding; ties go to the longer innermost (contiguous) extent.
void inner_tile(const int64_t* e, int total, int* u) {
  const int lt = log2i(total);
  int64_t best = -1;
  for (int a = 0; a <= lt; ++a)
    for (int b = 0; a + b <= lt; ++b) {
      const int c = lt - a - b;
      const int s[3] = {1 << a, 1 << b, 1 << c};
      int64_t cost = 1;
      for (int i = 0; i < 3; ++i) cost *= (e[i] + s[i] - 1) / s[i] * s[i];
      if (best < 0 || cost < best || (cost == best && s[2] > u[2])) {
        best = cost;
        u[0] = s[0], u[1] = s[1], u[2] = s[2];
      }
    }
}

bool aligned(const void* ptr, const int64_t* strides, int n) {
  if (reinterpret_cast<uintptr_t>(ptr) % 16) return false;
  for (int i = 0; i < n; ++i)
    if (strides[i] % 8) return false;
  return true;
}
bool vec_ok(const Operand& o) {
  if (!o.data) return true;
  const int64_t s[5] = {o.sb, o.sx, o.sy, o.sz, o.sh};
  return o.sd == 1 && aligned(o.data, s, 5);
}
bool vec_ok(const TokenOperand& o) {
  if (!o.data) return true;
  const int64_t s[3] = {o.sb, o.sn, o.sh};
  return o.sd == 1 && aligned(o.data, s, 3);
}

// inner_total: keys per inner tile (forward/dQ) or queries (dK/dV).
Geo make_geo(const Params& p, int block_total, int inner_total, bool backward_ops) {
  Geo g{};
  block_tile(p, block_total, g.t);
  int64_t e[3];
  for (int a = 0; a < 3; ++a) {
    g.tsh[a] = 0;
    e[a] = std::min<int64_t>(p.axis[a].kernel + g.t[a] - 1, group_len_max(p.axis[a]));
  }
  inner_tile(e, inner_total, g.u);
  g.tsh[2] = 0, g.tsh[1] = log2i(g.t[2]), g.tsh[0] = log2i(g.t[2] * g.t[1]);
  g.ush[2] = 0, g.ush[1] = log2i(g.u[2]), g.ush[0] = log2i(g.u[2] * g.u[1]);
  g.n_spatial_blocks = 1;
  for (int a = 0; a < 3; ++a) {
    const int64_t lg = group_len_max(p.axis[a]);
    g.tiles_per_group[a] = int((lg + g.t[a] - 1) / g.t[a]);
    g.tiles[a] = p.axis[a].dilation * g.tiles_per_group[a];
    g.add_tiles_per_group[a] = int((lg + g.u[a] - 1) / g.u[a]);
    g.n_spatial_blocks *= g.tiles[a];
  }
  g.vec = vec_ok(p.q) && vec_ok(p.k) && vec_ok(p.v) && vec_ok(p.add_k) && vec_ok(p.add_v) && p.head_dim % 8 == 0 &&
          p.head_dim_v % 8 == 0;
  if (backward_ops) g.vec = g.vec && vec_ok(p.d_out);
  g.delta = nullptr;
  return g;
}

int bucket(const Params& p) {
  const int64_t d = std::max(p.head_dim, p.head_dim_v);
  return d <= 32 ? 32 : d <= 64 ? 64 : d <= 128 ? 128 : 256;
}

bool device_ok(int index) {
  static int cached[64] = {};  // 0 unknown, 1 ok, 2 too old
  if (index < 0 || index >= 64) return false;
  if (!cached[index]) {
    int major = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    cached[index] = major >= 8 ? 1 : 2;
  }
  return cached[index] == 1;
}

std::string unsupported(const Params& p, bool backward) {
  if (p.dtype != DType::float16 && p.dtype != DType::bfloat16)
    return "fused runs float16 and bfloat16 only (tensor cores); float32/float64 go to naive/reference";
  if (std::max(p.head_dim, p.head_dim_v) > (backward ? 128 : 256))
    return backward ? "fused backward supports head_dim and head_dim_v <= 128"
                    : "fused supports head_dim and head_dim_v <= 256";
  for (int a = 0; a < 3; ++a)
    if (p.axis[a].length >= (int64_t(1) << 30)) return "fused needs spatial axes shorter than 2^30";
  if (!device_ok(p.device.index)) return "fused needs a GPU of compute capability 8.0 or newer";
  return {};
}

template <class F>
void visit(const Params& p, F&& f) {
  const int hd = bucket(p);
  auto by_dim = [&](auto tag) {
    using T = decltype(tag);
    switch (hd) {
      case 32: f(T{}, std::integral_constant<int, 32>{}); break;
      case 64: f(T{}, std::integral_constant<int, 64>{}); break;
      case 128: f(T{}, std::integral_constant<int, 128>{}); break;
      default: f(T{}, std::integral_constant<int, 256>{}); break;
    }
  };
  if (p.dtype == DType::float16) by_dim(__half{});
  else by_dim(__nv_bfloat16{});
}

void forward(const Params& p, void* stream) {
  cuda::DeviceGuard guard(p.device.index);
  const auto s = static_cast<cudaStream_t>(stream);
  visit(p, [&](auto tag, auto hd) {
    using T = decltype(tag);
    constexpr int HD = decltype(hd)::value;
    constexpr int MI = fwd_mi<HD>();
    // (Halving the block to 64 queries when 128-query blocks leave SMs idle
    // was measured slower on the 1-D anchor: 0.32 vs 0.21 ms. Not done.)
    launch_forward<T, HD, MI>(p, make_geo(p, kRows * MI, fwd_bk<HD>(), false), s);
  });
}

void backward(const Params& p, void* stream) {
  cuda::DeviceGuard guard(p.device.index);
  const auto s = static_cast<cudaStream_t>(stream);
  cuda::Workspace ws(size_t(p.batch * p.tokens() * p.heads) * sizeof(float), s);
  visit(p, [&](auto tag, auto hd) {
    using T = decltype(tag);
    constexpr int HD = decltype(hd)::value;
    if constexpr (HD <= 128) {
      launch_delta<T, HD>(p, ws.as<float>(), s);
      Geo gq = make_geo(p, kRows, kv_tile<HD>(), true);
      gq.delta = ws.as<float>();
      launch_dq<T, HD>(p, gq, s);
      Geo gk = make_geo(p, kRows, kRows, true);
      gk.delta = ws.as<float>();
      launch_dkdv<T, HD>(p, gk, s);
    }
  });
}

}  // namespace
}  // namespace nhood::fused

namespace nhood::detail {
BackendEntry fused_backend() {
  return {Backend::fused, DeviceKind::cuda, fused::unsupported, fused::forward, fused::backward};
}
}  // namespace nhood::detail
