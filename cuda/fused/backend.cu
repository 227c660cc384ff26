// The `fused` backend row: support checks, host-side tiling choice and the
// (dtype, head-dim bucket) switch. Kernels: forward.cuh, backward.cuh.
#include <cuda_runtime.h>

#include <string>

#include "../../src/backend.hpp"
#include "../common/check.cuh"
#include "../common/device_guard.cuh"
#include "../common/workspace.cuh"
#include "fused.cuh"  // declarations only: kernels are instantiated in inst_*.cu
#include "geometry.hpp"

namespace nhood::fused {

template <class T, int HD, int MI> void launch_forward(const Params&, const Geo&, cudaStream_t);
template <class T, int HD> void launch_small_forward(const Params&, const Geo&, cudaStream_t);
template <class T, int HD> void launch_delta(const Params&, float*, cudaStream_t);
template <class T, int HD> void launch_dq(const Params&, const Geo&, cudaStream_t);
template <class T, int HD> void launch_dkdv(const Params&, const Geo&, cudaStream_t);

namespace {

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
    Geo g = make_geo(p, kRows * MI, fwd_bk<HD>(), false);
    // (At head dim 64 it measured no faster in 2-D and 3-D and 6-34% slower
    // in other shapes: its 256-row box fits 2 blocks per SM where the general
    // kernel runs 3.)
    if constexpr (HD == 32) {
      if (small_window_geo(p, g)) return launch_small_forward<T, HD>(p, g, s);
    }
    launch_forward<T, HD, MI>(p, g, s);
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
