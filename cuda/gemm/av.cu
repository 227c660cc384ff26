// gemm AV forward, the gather form: per (batch, head, query tile), for each
// 64-key chunk of the tile's KV union box (+ additional tokens) gather the
// in-window weights into a dense [64 x 64] tile (0 elsewhere) and multiply
// it with the chunk's values on tensor cores, accumulating out in registers.
#include <cuda_runtime_api.h>
#include <mma.h>

#include "../common/check.cuh"
#include "../common/device_guard.cuh"
#include "../common/element.cuh"
#include "columns.cuh"
#include "tile.cuh"
#include "unfused.hpp"

namespace nhood::cuda::unfused {
namespace {

using namespace nvcuda;
using detail::AVParams;
using detail::Params;

// NF = head_dim_v / 16. Shared memory: V chunk [64][ldv] T, P tile [64][72] T,
// output staging [64][ldo] float.
template <typename T, int NF>
__global__ void __launch_bounds__(kBlockThreads) av_gemm_kernel(AVParams ap, TileShape ts) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const Params& p = ap.shape;
  constexpr int Dv = NF * 16;
  constexpr int ldv = Dv + 8, ldp = kChunkKeys + 8, ldo = Dv + 4;
  extern __shared__ __align__(128) unsigned char smem[];
  T* sV = reinterpret_cast<T*>(smem);
  T* sP = sV + kChunkKeys * ldv;
  float* sO = reinterpret_cast<float*>(sP + kTileQueries * ldp);
  __shared__ int64_t wbeg[3][kTileQueries], wcnt[3][kTileQueries];

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
  __syncthreads();
  const int64_t U = ax[0].extent * ax[1].extent * ax[2].extent;

  auto query = [&](int ql, int64_t (&i)[3], Coord& c) {
    i[2] = ql % ts.t[2];
    i[1] = (ql / ts.t[2]) % ts.t[1];
    i[0] = ql / (ts.t[2] * ts.t[1]);
    if (i[0] >= ax[0].n || i[1] >= ax[1].n || i[2] >= ax[2].n) return false;
    c = Coord{b, ax[0].g + (ax[0].p0 + i[0]) * p.axis[0].dilation, ax[1].g + (ax[1].p0 + i[1]) * p.axis[1].dilation,
              ax[2].g + (ax[2].p0 + i[2]) * p.axis[2].dilation, h};
    return true;
  };

  const int warp = threadIdx.x / 32;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[NF];
  for (int j = 0; j < NF; ++j) wmma::fill_fragment(acc[j], 0.0f);

  for (int64_t c0 = 0; c0 < U + p.n_additional; c0 += kChunkKeys) {
    for (int e = threadIdx.x; e < kChunkKeys * Dv; e += blockDim.x) {
      const int kl = e / Dv, d = e % Dv;
      const int64_t u = c0 + kl;
      T v = T(0.0f);
      if (u < U) {
        const int64_t u2 = u % ax[2].extent, u1 = (u / ax[2].extent) % ax[1].extent,
                      u0 = u / (ax[2].extent * ax[1].extent);
        const Coord k{b, ax[0].g + (ax[0].begin + u0) * p.axis[0].dilation,
                      ax[1].g + (ax[1].begin + u1) * p.axis[1].dilation,
                      ax[2].g + (ax[2].begin + u2) * p.axis[2].dilation, hk};
        v = static_cast<const T*>(ap.value.data)[offset(ap.value, k) + d * ap.value.sd];
      } else if (u < U + p.n_additional) {
        v = static_cast<const T*>(ap.add_v.data)[offset(ap.add_v, b, u - U, hk) + d * ap.add_v.sd];
      }
      sV[kl * ldv + d] = v;
    }
    for (int e = threadIdx.x; e < kTileQueries * kChunkKeys; e += blockDim.x) {
      const int ql = e / kChunkKeys, kl = e % kChunkKeys;
      const int64_t u = c0 + kl;
      int64_t i[3];
      Coord q;
      T w = T(0.0f);
      if (u < U + p.n_additional && query(ql, i, q)) {
        int64_t col = -1;
        if (u < U) {
          const int64_t uu[3] = {u / (ax[2].extent * ax[1].extent), (u / ax[2].extent) % ax[1].extent,
                                 u % ax[2].extent};
          col = 0;
          for (int a = 0; a < 3 && col >= 0; ++a) {
            const int64_t slot = ax[a].begin + uu[a] - wbeg[a][i[a]];
            col = (slot >= 0 && slot < wcnt[a][i[a]]) ? col * p.axis[a].kernel + slot : -1;
          }
        } else {
          col = ap.n_window + (u - U);
        }
        if (col >= 0) w = static_cast<const T*>(ap.weights.data)[offset(ap.weights, q) + col * ap.weights.sd];
      }
      sP[ql * ldp + kl] = w;
    }
    __syncthreads();
    for (int kk = 0; kk < kChunkKeys; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
      wmma::load_matrix_sync(fa, sP + warp * 16 * ldp + kk, ldp);
      for (int j = 0; j < NF; ++j) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb;
        wmma::load_matrix_sync(fb, sV + kk * ldv + j * 16, ldv);
        wmma::mma_sync(acc[j], fa, fb, acc[j]);
      }
    }
    __syncthreads();
  }
  for (int j = 0; j < NF; ++j) wmma::store_matrix_sync(sO + warp * 16 * ldo + j * 16, acc[j], ldo, wmma::mem_row_major);
  __syncthreads();
  for (int e = threadIdx.x; e < kTileQueries * Dv; e += blockDim.x) {
    const int ql = e / Dv, d = e % Dv;
    int64_t i[3];
    Coord q;
    if (query(ql, i, q)) store(static_cast<T*>(ap.out.data) + offset(ap.out, q) + d * ap.out.sd, sO[ql * ldo + d]);
  }
#endif
}

template <typename T, int NF>
void launch(const AVParams& ap, cudaStream_t stream) {
  const Params& p = ap.shape;
  const TileShape ts = tile_shape(p);
  constexpr int Dv = NF * 16;
  const size_t smem = size_t(kChunkKeys * (Dv + 8) + kTileQueries * (kChunkKeys + 8)) * sizeof(T) +
                      size_t(kTileQueries * (Dv + 4)) * 4;
  NHOOD_CUDA_CHECK(cudaFuncSetAttribute(av_gemm_kernel<T, NF>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const int64_t blocks = p.batch * p.heads * ts.tiles[0] * ts.tiles[1] * ts.tiles[2];
  av_gemm_kernel<T, NF><<<unsigned(blocks), kBlockThreads, smem, stream>>>(ap, ts);
  NHOOD_CUDA_CHECK_LAUNCH("unfused gemm av kernel");
}

template <typename T>
void launch_dim(const AVParams& ap, cudaStream_t stream) {
  switch (ap.shape.head_dim_v / 16) {
    case 1: return launch<T, 1>(ap, stream);
    case 2: return launch<T, 2>(ap, stream);
    case 3: return launch<T, 3>(ap, stream);
    case 4: return launch<T, 4>(ap, stream);
    case 5: return launch<T, 5>(ap, stream);
    case 6: return launch<T, 6>(ap, stream);
    case 7: return launch<T, 7>(ap, stream);
    default: return launch<T, 8>(ap, stream);
  }
}

}  // namespace

void gemm_av_forward(const AVParams& ap, void* stream) {
  DeviceGuard guard(ap.shape.device.index);
  if (ap.shape.dtype == DType::float16)
    launch_dim<__half>(ap, static_cast<cudaStream_t>(stream));
  else
    launch_dim<__nv_bfloat16>(ap, static_cast<cudaStream_t>(stream));
}

}  // namespace nhood::cuda::unfused
