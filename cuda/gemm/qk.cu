// gemm QK forward: per (batch, head, query tile), tensor-core GEMMs of the
// tile's queries against 64-key chunks of its KV union box (+ additional
// tokens), writing only the in-window entries of each product into the
// weights (plus the bias); unused causal columns get -inf.
#include <cuda_runtime_api.h>
#include <mma.h>

#include <cmath>

#include "../common/check.cuh"
#include "../common/device_guard.cuh"
#include "../common/element.cuh"
#include "columns.cuh"
#include "tile.cuh"
#include "unfused.hpp"

namespace nhood::cuda::unfused {
namespace {

using namespace nvcuda;
using detail::Params;
using detail::QKParams;

// Shared memory: Q tile [64][ld], K chunk [64][ld] (T), logits [64][68] float,
// per-axis window begin/count of the tile's queries.
template <typename T>
__global__ void __launch_bounds__(kBlockThreads) qk_gemm_kernel(QKParams qp, TileShape ts) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const Params& p = qp.shape;
  const int64_t D = p.head_dim;
  const int ld = int(D) + 8;
  constexpr int lds = kChunkKeys + 4;
  extern __shared__ __align__(128) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem);
  T* sK = sQ + kTileQueries * ld;
  float* sS = reinterpret_cast<float*>(sK + kChunkKeys * ld);
  __shared__ int64_t wbeg[3][kTileQueries], wcnt[3][kTileQueries];

  // block -> (b, h, tile per axis)
  int64_t blk = blockIdx.x;
  const int64_t t2 = blk % ts.tiles[2]; blk /= ts.tiles[2];
  const int64_t t1 = blk % ts.tiles[1]; blk /= ts.tiles[1];
  const int64_t t0 = blk % ts.tiles[0]; blk /= ts.tiles[0];
  const int64_t h = blk % p.heads;
  const int64_t b = blk / p.heads;
  const int64_t hk = h / (p.heads / p.heads_kv);
  TileAxis ax[3];
  const int64_t tt[3] = {t0, t1, t2};
  for (int a = 0; a < 3; ++a)
    if (!tile_axis(p.axis[a], ts, a, tt[a], ax[a])) return;
  for (int i = threadIdx.x; i < 3 * kTileQueries; i += blockDim.x) {
    const int a = i / kTileQueries, k = i % kTileQueries;
    const IndexRange r = window_in_group(p.axis[a], detail::min64(ax[a].p0 + k, ax[a].lg - 1), ax[a].lg);
    wbeg[a][k] = r.begin;
    wcnt[a][k] = r.end - r.begin;
  }
  const int64_t U = ax[0].extent * ax[1].extent * ax[2].extent;
  const int64_t cols = qp.n_window + p.n_additional;

  // query local index -> coordinates; false if outside the tile
  auto query = [&](int ql, int64_t (&i)[3], Coord& c) {
    i[2] = ql % ts.t[2];
    i[1] = (ql / ts.t[2]) % ts.t[1];
    i[0] = ql / (ts.t[2] * ts.t[1]);
    if (i[0] >= ax[0].n || i[1] >= ax[1].n || i[2] >= ax[2].n) return false;
    c = Coord{b, ax[0].g + (ax[0].p0 + i[0]) * p.axis[0].dilation, ax[1].g + (ax[1].p0 + i[1]) * p.axis[1].dilation,
              ax[2].g + (ax[2].p0 + i[2]) * p.axis[2].dilation, h};
    return true;
  };

  for (int64_t e = threadIdx.x; e < kTileQueries * D; e += blockDim.x) {
    const int ql = int(e / D);
    const int64_t d = e % D;
    int64_t i[3];
    Coord c;
    const bool ok = query(ql, i, c);
    sQ[ql * ld + d] = ok ? static_cast<const T*>(qp.query.data)[offset(qp.query, c) + d * qp.query.sd] : T(0.0f);
  }
  __syncthreads();

  // Causal windows shorter than the kernel: -inf in the unused columns.
  if (p.axis[0].causal || p.axis[1].causal || p.axis[2].causal) {
    for (int64_t e = threadIdx.x; e < kTileQueries * qp.n_window; e += blockDim.x) {
      const int ql = int(e / qp.n_window);
      int64_t c = e % qp.n_window;
      int64_t i[3];
      Coord q;
      if (!query(ql, i, q)) continue;
      const int64_t s2 = c % p.axis[2].kernel, s1 = (c / p.axis[2].kernel) % p.axis[1].kernel,
                    s0 = c / (int64_t(p.axis[2].kernel) * p.axis[1].kernel);
      if (s0 >= wcnt[0][i[0]] || s1 >= wcnt[1][i[1]] || s2 >= wcnt[2][i[2]])
        store(static_cast<T*>(qp.weights.data) + offset(qp.weights, q) + c * qp.weights.sd, -INFINITY);
    }
  }

  const int warp = threadIdx.x / 32;
  for (int64_t c0 = 0; c0 < U + p.n_additional; c0 += kChunkKeys) {
    for (int64_t e = threadIdx.x; e < kChunkKeys * D; e += blockDim.x) {
      const int kl = int(e / D);
      const int64_t d = e % D;
      const int64_t u = c0 + kl;
      T v = T(0.0f);
      if (u < U) {
        const int64_t u2 = u % ax[2].extent, u1 = (u / ax[2].extent) % ax[1].extent,
                      u0 = u / (ax[2].extent * ax[1].extent);
        const Coord k{b, ax[0].g + (ax[0].begin + u0) * p.axis[0].dilation,
                      ax[1].g + (ax[1].begin + u1) * p.axis[1].dilation,
                      ax[2].g + (ax[2].begin + u2) * p.axis[2].dilation, hk};
        v = static_cast<const T*>(qp.key.data)[offset(qp.key, k) + d * qp.key.sd];
      } else if (u < U + p.n_additional) {
        v = static_cast<const T*>(qp.add_k.data)[offset(qp.add_k, b, u - U, hk) + d * qp.add_k.sd];
      }
      sK[kl * ld + d] = v;
    }
    __syncthreads();
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kChunkKeys / 16];
    for (int j = 0; j < kChunkKeys / 16; ++j) wmma::fill_fragment(acc[j], 0.0f);
    for (int kk = 0; kk < D; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
      wmma::load_matrix_sync(fa, sQ + warp * 16 * ld + kk, ld);
      for (int j = 0; j < kChunkKeys / 16; ++j) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
        wmma::load_matrix_sync(fb, sK + j * 16 * ld + kk, ld);
        wmma::mma_sync(acc[j], fa, fb, acc[j]);
      }
    }
    for (int j = 0; j < kChunkKeys / 16; ++j)
      wmma::store_matrix_sync(sS + warp * 16 * lds + j * 16, acc[j], lds, wmma::mem_row_major);
    __syncthreads();
    // Scatter the in-window products into their columns.
    for (int e = threadIdx.x; e < kTileQueries * kChunkKeys; e += blockDim.x) {
      const int ql = e / kChunkKeys, kl = e % kChunkKeys;
      const int64_t u = c0 + kl;
      int64_t i[3];
      Coord q;
      if (u >= U + p.n_additional || !query(ql, i, q)) continue;
      float s = sS[ql * lds + kl];
      int64_t col;
      if (u < U) {
        const int64_t uu[3] = {u / (ax[2].extent * ax[1].extent), (u / ax[2].extent) % ax[1].extent,
                               u % ax[2].extent};
        col = 0;
        int64_t bias = 0;
        bool inside = true;
        const int64_t bs[3] = {qp.rpb.sx, qp.rpb.sy, qp.rpb.sz};
        for (int a = 0; a < 3 && inside; ++a) {
          const int64_t kp = ax[a].begin + uu[a];
          const int64_t slot = kp - wbeg[a][i[a]];
          inside = slot >= 0 && slot < wcnt[a][i[a]];
          col = col * p.axis[a].kernel + slot;
          bias += (kp - (ax[a].p0 + i[a]) + p.axis[a].kernel - 1) * bs[a];
        }
        if (!inside) continue;
        if (qp.rpb.data) s += float(load(static_cast<const T*>(qp.rpb.data) + h * qp.rpb.sh + bias));
      } else {
        col = qp.n_window + (u - U);
      }
      store(static_cast<T*>(qp.weights.data) + offset(qp.weights, q) + col * qp.weights.sd, s);
    }
    __syncthreads();
  }
  (void)cols;
#endif
}

template <typename T>
void launch(const QKParams& qp, cudaStream_t stream) {
  const Params& p = qp.shape;
  const TileShape ts = tile_shape(p);
  const int ld = int(p.head_dim) + 8;
  const size_t smem = size_t(2 * kTileQueries * ld) * sizeof(T) + size_t(kTileQueries * (kChunkKeys + 4)) * 4;
  NHOOD_CUDA_CHECK(cudaFuncSetAttribute(qk_gemm_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const int64_t blocks = p.batch * p.heads * ts.tiles[0] * ts.tiles[1] * ts.tiles[2];
  qk_gemm_kernel<T><<<unsigned(blocks), kBlockThreads, smem, stream>>>(qp, ts);
  NHOOD_CUDA_CHECK_LAUNCH("unfused gemm qk kernel");
}

}  // namespace

void gemm_qk_forward(const QKParams& qp, void* stream) {
  DeviceGuard guard(qp.shape.device.index);
  if (qp.shape.dtype == DType::float16)
    launch<__half>(qp, static_cast<cudaStream_t>(stream));
  else
    launch<__nv_bfloat16>(qp, static_cast<cudaStream_t>(stream));
}

}  // namespace nhood::cuda::unfused
