// fused backend: flash-style neighborhood attention on tensor cores
// (mma.sync m16n8k16, sm_80+). Shared pieces of the forward, dQ and dK/dV
// kernels: tile geometry, warp-level MMA/ldmatrix wrappers, tile loaders.
//
// Tiling (DESIGN section 5). A block owns a box of 64 tokens of ONE dilation
// group per axis ("block tile", shape t[3], product 64, powers of two). The
// tokens it interacts with form a box in group positions (KV neighborhood in
// the forward, inverse neighborhood for dK/dV), because window begin/end are
// monotone in the query position (window.hpp). That box is walked in "inner
// tiles" (shape u[3], product BK, powers of two). An inner tile fully inside
// every row's window skips the per-element mask.
//
// Rank, kernel, stride, dilation and causal are run-time values; templates
// are only dtype x head-dim bucket.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "nhood/detail/params.hpp"
#include "nhood/window.hpp"

namespace nhood::fused {

using detail::Operand;
using detail::Params;
using detail::TokenOperand;

constexpr int kThreads = 128;  // 4 warps x 16 rows
constexpr int kRows = 64;      // rows of a block tile

// KV inner tile size of the forward/dQ walk: 64 keys, 32 at head dim 256
// (registers: the 16 x 256 fp32 output accumulator per warp).
template <int HD>
constexpr int kv_tile() {
  return HD == 256 ? 32 : 64;
}

// Small-window forward (small.cuh): K/V rows of the shared-memory tile that
// holds a block's whole KV box, and keys a warp's 16 queries may span (16
// n-tiles of 8: the logits stay in 64 registers).
constexpr int kSmallBoxRows = 256;
constexpr int kSmallWarpKeys = 128;

// Forward: MI m-tiles of 16 query rows per warp (block of 64 * MI queries)
// and a KV inner tile of fwd_bk keys. At head dim 128, 64 keys (two-stage
// ring, 96 B of spills) beat 32 (three stages, no spills) by 8-9% on the
// 1-D, 2-D and 3-D anchors: twice the independent QK accumulator chains per
// K fragment pass, half the barriers per key (docs/performance.md, fused v7).
// Two m-tiles at head dim 128 halve the K/V fragment loads per MMA. (At 32
// they made 7x7 vision 34% slower: 128-query blocks fit 3 per SM instead of
// 4 and walk 8 KV tiles where two 64-query blocks walk 4 each.)
template <int HD>
constexpr int fwd_mi() {
  return HD == 128 ? 2 : 1;
}
template <int HD>
constexpr int fwd_bk() {
  return HD >= 256 ? 32 : 64;
}

// Division by a divisor fixed per launch as a multiply-high, an add and a
// shift (round-up method; host-computed multiplier), exact for 0 <= n < 2^31
// and 1 <= d < 2^31: the block-index decomposition in BlockTile::init ran
// five ~25-instruction divisions per block, a visible share of blocks with
// few KV steps (7x7 vision: 4 steps).
struct FastDiv {
  uint32_t d = 1, mul = 1, shift = 0;
  FastDiv() = default;
  explicit FastDiv(int divisor) : d(uint32_t(divisor > 0 ? divisor : 1)) {  // counts validated upstream are >= 1
    while ((uint64_t(1) << shift) < d) ++shift;
    mul = uint32_t(((uint64_t(1) << 32) * ((uint64_t(1) << shift) - d)) / d + 1);
  }
  __host__ __device__ __forceinline__ int div(int n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t hi = __umulhi(uint32_t(n), mul);
#else
    const uint32_t hi = uint32_t((uint64_t(uint32_t(n)) * mul) >> 32);
#endif
    return int((hi + uint32_t(n)) >> shift);
  }
  __host__ __device__ __forceinline__ int mod(int n, int q) const { return n - q * int(d); }
};

// Host-computed tiling, passed by value.
struct Geo {
  int t[3];                // block tile shape (powers of two, product 64)
  int tsh[3];              // local index -> coordinate: (i >> tsh[a]) & (t[a] - 1)
  // Block index -> per-axis tile index (tiles[a] = dilation * tiles per
  // group along a), then -> (dilation group, tile within it).
  FastDiv tiles_div[2];    // by tiles[2], tiles[1]
  FastDiv tpg_div[3];      // by block tiles per dilation group, per axis
  FastDiv kv_group;        // heads / heads_kv (query heads per KV head)
  int n_spatial_blocks;    // tiles[0] * tiles[1] * tiles[2]
  int u[3];                // inner tile shape (product BK or 64)
  // The hopper forward starts each box's walk at its tile holding the first
  // multiple of 2^walk_shift[a] (TileCursor::start); 0: at the box's corner.
  int walk_shift[3];
  int ush[3];
  int add_tiles_per_group[3];  // dK/dV additional mode: u-tiles per group per axis
  // Small-window forward: a block row r belongs to warp tile r >> 4 (grid
  // position ((r >> 4) >> wgsh[a]) & wgmask[a] along a) and sits at
  // (r >> wsh[a]) & ((1 << wlog[a]) - 1) in it; warp tiles are 1 << wlog[a] long.
  int wlog[3], wsh[3], wgsh[3], wgmask[3];
  bool vec;                // all loaded operands allow 16-byte cp.async
  float* delta;            // backward: [B, X, Y, Z, H] rowsum(dO * O)
};

// ---------------------------------------------------------------- type glue
template <class T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T> __device__ __forceinline__ uint32_t pack2(float a, float b);
template <> __device__ __forceinline__ uint32_t pack2<__half>(float a, float b) {
  __half2 h = __floats2half2_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&h);
}
template <> __device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float a, float b) {
  __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&h);
}

// D += A(16x16, row) * B(16x8, col), fp32 accumulate.
template <class T>
__device__ __forceinline__ void mma(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  if constexpr (sizeof(T) == 2 && std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ void ldsm4(uint32_t* r, const void* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void ldsm4t(uint32_t* r, const void* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  const int n = valid ? 16 : 0;  // 0: zero-fill, nothing read
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(a), "l"(src), "r"(n));
}
// cp.async of 4 or 8 bytes (.ca: .cg copies 16 only); zero-filled when !valid.
template <int Bytes>
__device__ __forceinline__ void cp_async_ca(void* dst, const void* src, bool valid) {
  static_assert(Bytes == 4 || Bytes == 8);
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  const int n = valid ? Bytes : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(a), "l"(src), "n"(Bytes), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N of this thread's committed groups are pending.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
// Byte permute of x whose selector nibbles may set bit 3: that output byte
// then replicates the sign (bit 7) of the selected byte (PTX prmt's default
// mode; __byte_perm documents only the three index bits).
__device__ __forceinline__ uint32_t prmt_sign(uint32_t x, uint32_t selector) {
  uint32_t r;
  asm("prmt.b32 %0, %1, 0, %2;" : "=r"(r) : "r"(x), "r"(selector));
  return r;
}

// Warp-level fragment addressing into a row-major smem tile with leading
// dimension LD (elements). `row0`/`col0`: top-left of the 16x16 block.
// A operand (rows = M, cols = K), or B "non-trans" for a [n][k] tile: pairs
// of n-tiles (matrices: n0-7/k0-7, n0-7/k8-15, n8-15/k0-7, n8-15/k8-15).
template <int LD, class T>
__device__ __forceinline__ const T* a_addr(const T* s, int row0, int col0, int lane) {
  return s + (row0 + (lane & 15)) * LD + col0 + (lane >> 4) * 8;
}
template <int LD, class T>
__device__ __forceinline__ const T* b_addr(const T* s, int n0, int k0, int lane) {
  return s + (n0 + (lane & 7) + (lane >> 4) * 8) * LD + k0 + ((lane >> 3) & 1) * 8;
}
// B from a [k][n] tile via .trans (matrices: k0-7/n0-7, k8-15/n0-7, k0-7/n8-15, k8-15/n8-15).
template <int LD, class T>
__device__ __forceinline__ const T* bt_addr(const T* s, int k0, int n0, int lane) {
  return s + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + n0 + (lane >> 4) * 8;
}

// Loads `nrows` rows of `ncols` valid elements into a [nrows][HD+8] smem tile,
// zero-filling invalid rows and columns >= ncols. rowfn(r, off) -> valid.
template <int HD, int NROWS, class T, class RowFn>
__device__ __forceinline__ void load_rows(T* sm, const T* g, int64_t sd, int ncols, bool vec, RowFn rowfn) {
  constexpr int LD = HD + 8;
  constexpr int CH = HD / 8;
  for (int i = threadIdx.x; i < NROWS * CH; i += kThreads) {
    const int r = i / CH, c = i % CH;
    int64_t off = 0;
    const bool ok = rowfn(r, off);
    T* dst = sm + r * LD + c * 8;
    if (vec) {
      const bool v = ok && c * 8 < ncols;
      cp_async16(dst, v ? g + off + c * 8 : g, v);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int d = c * 8 + e;
        dst[e] = (ok && d < ncols) ? g[off + d * sd] : from_float<T>(0.f);
      }
    }
  }
}

// Stores this thread's part of accumulator row r (acc[n][2r + e] holds
// column 8n + 2 (lane % 4) + e), times scale, to a row of ncols elements at
// g with element stride sd: column pairs as one 32-bit store where the row
// allows it (unit stride, 4-byte aligned), else element by element.
template <class T, int HD>
__device__ __forceinline__ void store_row(T* g, int64_t sd, int ncols, const float (*acc)[4], int r, float scale,
                                          int lane) {
  const bool pairs = sd == 1 && (reinterpret_cast<uintptr_t>(g) & 3) == 0;
#pragma unroll
  for (int n = 0; n < HD / 8; ++n) {
    const int d = n * 8 + (lane & 3) * 2;
    const float x = acc[n][2 * r] * scale, y = acc[n][2 * r + 1] * scale;
    if (pairs && d + 1 < ncols) {
      *reinterpret_cast<uint32_t*>(g + d) = pack2<T>(x, y);
    } else {
      if (d < ncols) g[d * sd] = from_float<T>(x);
      if (d + 1 < ncols) g[(d + 1) * sd] = from_float<T>(y);
    }
  }
}

__device__ __forceinline__ int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Block tile of 64 tokens: per axis its dilation group g, group length lg,
// and the valid group positions [p0, pend). Returns false if empty.
struct BlockTile {
  int g[3], lg[3], p0[3], pend[3];
  __device__ bool init(const Params& p, const Geo& geo, int bx) {
    int i[3];
    const int r2 = geo.tiles_div[0].div(bx);
    i[2] = geo.tiles_div[0].mod(bx, r2);
    i[0] = geo.tiles_div[1].div(r2);
    i[1] = geo.tiles_div[1].mod(r2, i[0]);
    bool ok = true;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      g[a] = geo.tpg_div[a].div(i[a]);
      p0[a] = geo.tpg_div[a].mod(i[a], g[a]) * geo.t[a];
      lg[a] = int(group_length(p.axis[a], g[a]));
      pend[a] = min(p0[a] + geo.t[a], lg[a]);
      ok = ok && p0[a] < lg[a];
    }
    return ok;
  }
  // Local row r -> group positions; false for padding rows.
  __device__ bool pos(const Geo& geo, int r, int* q) const {
    bool ok = true;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      q[a] = p0[a] + ((r >> geo.tsh[a]) & (geo.t[a] - 1));
      ok = ok && q[a] < pend[a];
    }
    return ok;
  }
};

// The KV side of a query block: neighborhood box [kb, ke) per axis, the
// intersection of all valid rows' windows [ib, ie), and the inner tiles.
// With `inverse`, the same for a block of keys and the queries attending
// them (inverse windows; no additional tokens), as the dK/dV passes walk.
struct KvWalk {
  int kb[3], ke[3], ib[3], ie[3], nk[3];
  int n_spatial, n_total;
  __device__ void init(const Params& p, const Geo& geo, const BlockTile& bt, int bk, bool inverse = false) {
    IndexRange wf[3], wl[3];
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      wf[a] = inverse ? inverse_window_in_group(p.axis[a], bt.p0[a], bt.lg[a])
                      : window_in_group(p.axis[a], bt.p0[a], bt.lg[a]);
      wl[a] = inverse ? inverse_window_in_group(p.axis[a], bt.pend[a] - 1, bt.lg[a])
                      : window_in_group(p.axis[a], bt.pend[a] - 1, bt.lg[a]);
    }
    init_box(geo, wf, wl, inverse ? 0 : ceil_div(int(p.n_additional), bk));
  }
  // From the (inverse) windows wf, wl of the block's first and last valid
  // positions per axis, and the number of additional-token tiles.
  __device__ void init_box(const Geo& geo, const IndexRange* wf, const IndexRange* wl, int n_additional_tiles) {
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      kb[a] = int(wf[a].begin);
      ke[a] = int(wl[a].end);
      ib[a] = int(wl[a].begin);
      ie[a] = int(wf[a].end);
      nk[a] = max(0, ceil_div(ke[a] - kb[a], geo.u[a]));  // an inverse box can be empty
    }
    n_spatial = nk[0] * nk[1] * nk[2];
    n_total = n_spatial + n_additional_tiles;
  }
  // Origin of spatial inner tile `it`; returns whether it needs no mask.
  __device__ bool origin(const Geo& geo, int it, int* j0) const {
    int i[3];
    i[2] = it % nk[2];
    i[1] = (it / nk[2]) % nk[1];
    i[0] = it / (nk[2] * nk[1]);
    bool full = true;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      j0[a] = kb[a] + i[a] * geo.u[a];
      full = full && j0[a] >= ib[a] && j0[a] + geo.u[a] <= ie[a];
    }
    return full;
  }
};

__device__ __forceinline__ int64_t tok_off(const Operand& o, const Params& p, const int* g, const int* q) {
  return int64_t(g[0] + p.axis[0].dilation * q[0]) * o.sx + int64_t(g[1] + p.axis[1].dilation * q[1]) * o.sy +
         int64_t(g[2] + p.axis[2].dilation * q[2]) * o.sz;
}
// The backward's delta workspace: one float per query row, [B, X, Y, Z, H]:
// a row's index, and the same layout as token strides (for TileRows).
__device__ __forceinline__ int64_t row_index(const Params& p, int b, const int* g, const int* q, int h) {
  const int64_t x = g[0] + p.axis[0].dilation * q[0];
  const int64_t y = g[1] + p.axis[1].dilation * q[1];
  const int64_t z = g[2] + p.axis[2].dilation * q[2];
  return (((int64_t(b) * p.axis[0].length + x) * p.axis[1].length + y) * p.axis[2].length + z) * p.heads + h;
}
__device__ __forceinline__ Operand delta_layout(const Params& p) {
  Operand o;
  o.sz = p.heads;
  o.sy = o.sz * p.axis[2].length;
  o.sx = o.sy * p.axis[1].length;
  return o;
}

constexpr float kLog2e = 1.4426950408889634f;

// Lazy online-softmax rescaling: a row's tile maximum may exceed its running
// maximum by up to kRescaleSlack (log2 units) before the running maximum, l
// and O are rescaled. Exponents stay <= 2^8: exact for fp32 sums and
// representable in the fp16/bf16 P operand; a warp then skips the rescale of
// its O accumulators on most steps (a row's maximum settles within a few
// tiles, but some row of a warp's 16-32 moves on most steps otherwise).
constexpr float kRescaleSlack = 8.f;

// Pairwise reduction of N (a power of two) registers: depth log2(N) instead
// of an N-long dependent chain. Compile-time strides keep t in registers.
template <int N, class Op>
__device__ __forceinline__ float tree_reduce(float* t, Op op) {
  if constexpr (N == 1) {
    return t[0];
  } else {
#pragma unroll
    for (int n = 0; n < N / 2; ++n) t[n] = op(t[n], t[n + N / 2]);
    return tree_reduce<N / 2>(t, op);
  }
}

// exp2 on the SFU (ex2.approx, flushes denormals); inputs are <= 0 (or -inf) here.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace nhood::fused
