// The `hopper` backend row: support checks, tensor maps, persistent grid
// size and the (dtype, head dim) switch. Kernels: forward.cuh, backward.cuh.
//
// Backward runs the sm_90a kernels where they apply: a statistics pass, then
// one dK/dV pass that also sums dQ through float32 TMA reductions (5 GEMMs
// per step), or, with `deterministic`, a dQ pass and a dK/dV pass (7 GEMMs,
// no atomics). The fused backend's mma.sync kernels run the rest (additional
// KV tokens, layouts TMA cannot read), so training through backend="hopper"
// always works.
#include <cuda_runtime.h>

#include <cstdlib>
#include <string>
#include <type_traits>

#include "../../src/backend.hpp"
#include "../common/check.cuh"
#include "../common/device_guard.cuh"
#include "../common/workspace.cuh"
#include "../fused/geometry.hpp"
#include "backward.cuh"  // declarations only: kernels are instantiated in inst_*.cu
#include "forward.cuh"
#include "tensor_maps.hpp"

namespace nhood::detail {
BackendEntry fused_backend();
}

namespace nhood::hopper {

template <class T, int HD> void launch_forward(const FwdArgs&, int, cudaStream_t);
template <class T, int HD, bool KeyMajor, bool FuseDq = false>
void launch_backward(const BwdArgs&, int, cudaStream_t);
template <class T> void launch_stats(const Params&, float2*, cudaStream_t);
template <class T> void launch_dq_from_accum(const Params&, const float*, cudaStream_t);
void launch_inverse_windows(const Params&, int2*, int*, int, cudaStream_t);

namespace {

struct DeviceInfo {
  bool sm90 = false;
  int sms = 0;
  int64_t l2_bytes = 0;
};

const DeviceInfo& device_info(int index) {
  static DeviceInfo cache[64];
  static bool known[64] = {};
  static const DeviceInfo none{};
  if (index < 0 || index >= 64) return none;
  if (!known[index]) {
    int major = 0, minor = 0, sms = 0, l2 = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, index) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, index) != cudaSuccess ||
        cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, index) != cudaSuccess) {
      cudaGetLastError();
      return none;
    }
    cache[index] = {major == 9 && minor == 0, sms, l2};  // sm_90a code runs on exactly 9.0
    known[index] = true;
  }
  return cache[index];
}

// Calls f(T{}, integral_constant<int, HD>{}) for the problem's dtype and head dim.
template <class F>
void by_type(const Params& p, F&& f) {
  auto dims = [&](auto tag) {
    if (p.head_dim == 64) f(tag, std::integral_constant<int, 64>{});
    else f(tag, std::integral_constant<int, 128>{});
  };
  if (p.dtype == DType::float16) dims(__half{});
  else dims(__nv_bfloat16{});
}

Geo geometry(const Params& p) { return fused::make_geo(p, kTileRows, kTileKeys, false); }
// Backward: block tiles of 128 tokens (queries or keys), ring tiles of 64;
// of the two tie-breaks of the block tile, the one whose halves (one per
// consumer) need fewer ring tiles (backward.cuh: consumers skip the others).
// (Same-lease A/B: the 16x8 block of the 2-D anchor, 8x8 ring tiles, took
// its dK/dV pass 24.8 -> 22.8 ms by itself; on 3-D, a tie, the 4x8x4 block
// was 4-6% slower than 4x4x8 without the skipping. docs/performance.md,
// hopper session 18.) Ring tiles up to 10% more padded than the least
// compete on their mask-free count: the 3-D anchor's 1x2x32 tiles (least
// padding, none mask-free: 32 spans the box's z extent of 31) gave way to
// 2x4x8 (5% more padding, 23% mask-free): backward 164 -> 144 ms (session 22).
constexpr int kBwdRingSlackPct = 10;
Geo backward_geometry(const Params& p) {
  const Geo inner_ties = fused::make_geo(p, kBwdBlockRows, kBwdRingRows, true, false, kBwdRingSlackPct);
  const Geo outer_ties = fused::make_geo(p, kBwdBlockRows, kBwdRingRows, true, true, kBwdRingSlackPct);
  return fused::half_block_tiles(p, outer_ties) < fused::half_block_tiles(p, inner_ties) ? outer_ties : inner_ties;
}

// Bytes of the dQ accumulator that the single backward pass's concurrently
// running work items reduce into: the query box of `sms` consecutive block
// tiles (tiles vary fastest along z, then y, then x, then heads).
int64_t reduction_working_set(const Params& p, const Geo& g, int sms) {
  int64_t rows = sms, tokens = 1;  // rows: tiles still to place, in units of the axis being filled
  for (int a = 2; a >= 0; --a) {
    const int64_t n = int64_t(p.axis[a].dilation) * g.tpg_div[a].d;  // block tiles along a
    const int64_t span = std::min(rows, n) * g.t[a] * p.axis[a].dilation;
    tokens *= std::min<int64_t>(span + (p.axis[a].kernel - 1) * p.axis[a].dilation, p.axis[a].length);
    rows = (rows + n - 1) / n;
  }
  return tokens * std::min<int64_t>(rows, p.heads) * p.head_dim * int64_t(sizeof(float));
}

// Grids with many work items per SM claim them at run time, in order
// (pipeline.cuh: for_each_claimed_item); with few, the static order's tail
// is shorter.
bool many_items(const Params& p, int64_t n_items) { return n_items >= 4 * int64_t(device_info(p.device.index).sms); }
bool claims_items(const Params& p, int64_t n_items) {
  // Test knob, read per call: NHOOD_HOPPER_CLAIM_ITEMS=1 claims on any grid, =0 never.
  if (const char* env = std::getenv("NHOOD_HOPPER_CLAIM_ITEMS"); env && (env[0] == '0' || env[0] == '1'))
    return env[0] == '1';
  return many_items(p, n_items);
}

// The single backward pass (dQ by float32 TMA reductions: 5 GEMMs per step
// instead of 7) pays where its reductions stay in L2 and the grid has many
// items per SM (so they are claimed in order and the items in flight stay
// close). Measured on the H100 anchors with claimed items (docs/performance.md,
// hopper session 26): 2-D (21 MB of reductions in flight) backward -9%, 3-D
// (49 MB of the 50 MB L2) -5% against the two passes. With static striding
// the 3-D single pass had been +40%: drifting CTAs spread the reductions
// over more than L2. 1-D (2 items per SM): the pass itself only breaks even,
// so clearing and converting the accumulator make it a loss (session 19).
bool single_pass_pays(const Params& p, const Geo& g, int64_t n_items) {
  // Test and measurement knob, read per call: NHOOD_HOPPER_SINGLE_PASS=1 forces the single pass, =0 the two passes.
  if (const char* env = std::getenv("NHOOD_HOPPER_SINGLE_PASS"); env && (env[0] == '0' || env[0] == '1'))
    return env[0] == '1';
  const DeviceInfo& d = device_info(p.device.index);
  return many_items(p, n_items) && reduction_working_set(p, g, d.sms) <= d.l2_bytes;
}

std::string common_unsupported(const Params& p) {
  if (p.dtype != DType::float16 && p.dtype != DType::bfloat16) return "hopper runs float16 and bfloat16 only";
  if (p.head_dim != p.head_dim_v || (p.head_dim != 64 && p.head_dim != 128))
    return "hopper needs head_dim == head_dim_v in {64, 128} (fused runs the others)";
  if (!(p.scale > 0)) return "hopper needs a positive scale (it folds the scale into the exponent)";
  if (!device_info(p.device.index).sm90) return "hopper needs a GPU of compute capability 9.0 (H100/H200)";
  for (int a = 0; a < 3; ++a)
    if (p.axis[a].length >= (int64_t(1) << 30)) return "hopper needs spatial axes shorter than 2^30";
  return {};
}

std::string tiling_unsupported(const Params& p, const Geo& g) {
  if (int64_t(g.n_spatial_blocks) * p.heads * p.batch >= (int64_t(1) << 31))
    return "hopper needs fewer than 2^31 (tile, head, batch) work items";
  for (int a = 0; a < 3; ++a) {
    const int d = p.axis[a].dilation;
    // The copy engine steps a box dimension by at most 8 elements and spans at most 256.
    if (d > 8 || g.t[a] * d > 256 || g.u[a] * d > 256) return "hopper supports dilation up to 8 (tile span 256 tokens)";
  }
  return {};
}

std::string pair_store_unsupported(const detail::Operand& o, const char* name) {
  if (o.sd != 1 || reinterpret_cast<uintptr_t>(o.data) % 4 || (o.sb | o.sx | o.sy | o.sz | o.sh) % 2)
    return std::string("hopper writes ") + name +
           " as element pairs: it needs a unit-stride head dimension and even strides";
  return {};
}

std::string forward_unsupported(const Params& p) {
  std::string why = common_unsupported(p);
  if (why.empty()) why = tiling_unsupported(p, geometry(p));
  if (why.empty()) why = tensor_map_unsupported(p.q, p, p.heads, p.head_dim);
  if (why.empty()) why = tensor_map_unsupported(p.k, p, p.heads_kv, p.head_dim);
  if (why.empty()) why = tensor_map_unsupported(p.v, p, p.heads_kv, p.head_dim_v);
  if (why.empty()) why = tensor_map_unsupported(p.add_k, p, p.heads_kv, p.head_dim);
  if (why.empty()) why = tensor_map_unsupported(p.add_v, p, p.heads_kv, p.head_dim_v);
  if (why.empty()) why = pair_store_unsupported(p.out, "out");
  return why;
}

// Empty if the sm_90a backward kernels take the problem; otherwise the
// fused backward runs it.
std::string backward_kernels_unsupported(const Params& p) {
  if (p.n_additional > 0) return "hopper's backward kernels do not take additional KV tokens";
  if (!p.lse.data) return "hopper's backward needs the forward's lse";
  std::string why = common_unsupported(p);
  if (why.empty()) why = tiling_unsupported(p, backward_geometry(p));
  if (why.empty()) why = tensor_map_unsupported(p.q, p, p.heads, p.head_dim);
  if (why.empty()) why = tensor_map_unsupported(p.k, p, p.heads_kv, p.head_dim);
  if (why.empty()) why = tensor_map_unsupported(p.v, p, p.heads_kv, p.head_dim_v);
  if (why.empty()) why = tensor_map_unsupported(p.d_out, p, p.heads, p.head_dim_v);
  if (why.empty()) why = pair_store_unsupported(p.dq, "dq");
  if (why.empty()) why = pair_store_unsupported(p.dk, "dk");
  if (why.empty()) why = pair_store_unsupported(p.dv, "dv");
  return why;
}

// Backward support is the fused backward's: it runs whatever the sm_90a
// backward kernels do not take.
std::string unsupported(const Params& p, bool backward) {
  if (backward) return detail::fused_backend().unsupported_reason(p, true);
  return forward_unsupported(p);
}

void forward(const Params& p, void* stream) {
  if (p.batch == 0 || p.heads == 0 || p.tokens() == 0) return;
  cuda::DeviceGuard guard(p.device.index);
  FwdArgs a{};
  a.p = p;
  a.geo = geometry(p);
  a.q = token_tensor_map(p.q, p, p.heads, p.head_dim, a.geo.t);
  a.k = token_tensor_map(p.k, p, p.heads_kv, p.head_dim, a.geo.u);
  a.v = token_tensor_map(p.v, p, p.heads_kv, p.head_dim_v, a.geo.u);
  if (p.n_additional > 0) {
    a.add_k = extra_tensor_map(p.add_k, p, p.heads_kv, p.head_dim, kTileKeys);
    a.add_v = extra_tensor_map(p.add_v, p, p.heads_kv, p.head_dim_v, kTileKeys);
  }
  static const bool pingpong = [] {
    const char* env = std::getenv("NHOOD_HOPPER_PINGPONG");  // measurement knob (docs/performance.md)
    return !(env && env[0] == '0');
  }();
  a.pingpong = pingpong;
  // The output through TMA stores where a tensor map can describe it (a
  // caller's `out` may be any layout with even strides: element pairs then).
  a.tma_out = tensor_map_unsupported(p.out, p, p.heads, p.head_dim_v).empty();
  a.half_axis = fused::half_axis(a.geo);
  if (a.tma_out) {
    int half[3] = {a.geo.t[0], a.geo.t[1], a.geo.t[2]};
    half[a.half_axis] /= 2;
    a.out = token_tensor_map(p.out, p, p.heads, p.head_dim_v, half);
  }
  a.items = WorkItems(a.geo.n_spatial_blocks, p.heads, p.batch);
  const int grid = std::min(a.items.count, device_info(p.device.index).sms);
  const auto s = static_cast<cudaStream_t>(stream);
  by_type(p, [&](auto tag, auto hd) { launch_forward<decltype(tag), decltype(hd)::value>(a, grid, s); });
}

// One backward pass: block tiles of x and y (hb heads) against ring tiles
// of xr and yr (hr heads) over the persistent grid.
template <class T, int HD, bool KeyMajor, bool FuseDq = false>
void run_pass(BwdArgs a, const detail::Operand& x, const detail::Operand& y, int64_t hb, const detail::Operand& xr,
              const detail::Operand& yr, int64_t hr, int* claim, cudaStream_t s) {
  const Params& p = a.p;
  a.x = token_tensor_map(x, p, hb, HD, a.geo.t);
  a.y = token_tensor_map(y, p, hb, HD, a.geo.t);
  a.xr = token_tensor_map(xr, p, hr, HD, a.geo.u);
  a.yr = token_tensor_map(yr, p, hr, HD, a.geo.u);
  a.items = WorkItems(a.geo.n_spatial_blocks, hb, p.batch);
  a.claim = claims_items(p, a.items.count) ? claim : nullptr;
  launch_backward<T, HD, KeyMajor, FuseDq>(a, std::min(a.items.count, device_info(p.device.index).sms), s);
}

void backward(const Params& p, void* stream) {
  if (!backward_kernels_unsupported(p).empty()) return detail::fused_backend().backward(p, stream);
  if (p.batch == 0 || p.heads == 0 || p.tokens() == 0) return;
  cuda::DeviceGuard guard(p.device.index);
  const auto s = static_cast<cudaStream_t>(stream);
  by_type(p, [&](auto tag, auto hd) {
    using T = decltype(tag);
    constexpr int HD = decltype(hd)::value;
    // The single pass's float32 dQ accumulator (where it pays and memory
    // allows: without it the two passes run), then one allocation for the
    // statistics per query row and the inverse windows per axis position.
    const Geo geo = backward_geometry(p);
    const size_t rows = size_t(p.batch * p.tokens() * p.heads);
    const bool want_single =
        !p.deterministic && single_pass_pays(p, geo, int64_t(geo.n_spatial_blocks) * p.heads_kv * p.batch);
    const size_t acc_bytes = want_single ? rows * HD * sizeof(float) : 0;
    cuda::Workspace accumulator(acc_bytes, s, std::nothrow);
    const bool fuse_dq = accumulator.ok();
    float* acc = accumulator.as<float>();
    const size_t positions = size_t(p.axis[0].length + p.axis[1].length + p.axis[2].length);
    cuda::Workspace scratch(rows * sizeof(float2) + positions * sizeof(int2) + 2 * sizeof(int), s);
    float2* stats = scratch.as<float2>();
    int2* inverse = reinterpret_cast<int2*>(stats + rows);
    int* claims = reinterpret_cast<int*>(inverse + positions);  // one item claim counter per pass
    launch_stats<T>(p, stats, s);
    launch_inverse_windows(p, inverse, claims, 2, s);
    BwdArgs a{};
    a.p = p;
    a.geo = geo;
    a.stats = stats;
    a.inverse[0] = inverse;
    a.inverse[1] = inverse + p.axis[0].length;
    a.inverse[2] = inverse + p.axis[0].length + p.axis[1].length;
    // dQ: blocks of queries, ring over their keys; dK/dV: blocks of keys, ring over the queries attending them.
    if (fuse_dq) {
      NHOOD_CUDA_CHECK(cudaMemsetAsync(acc, 0, acc_bytes, s));
      a.dq_acc = accum_tensor_map(acc, p, p.heads, HD, a.geo.u);
      run_pass<T, HD, true, true>(a, p.k, p.v, p.heads_kv, p.q, p.d_out, p.heads, claims, s);
      launch_dq_from_accum<T>(p, acc, s);
    } else {
      run_pass<T, HD, false>(a, p.q, p.d_out, p.heads, p.k, p.v, p.heads_kv, claims, s);
      run_pass<T, HD, true>(a, p.k, p.v, p.heads_kv, p.q, p.d_out, p.heads, claims + 1, s);
    }
  });
}

}  // namespace
}  // namespace nhood::hopper

namespace nhood::detail {
BackendEntry hopper_backend() {
  return {Backend::hopper, DeviceKind::cuda, hopper::unsupported, hopper::forward, hopper::backward};
}
}  // namespace nhood::detail
