// Forward pass of the `cpu` backend: per (batch, head, query tile), pack the
// tile's KV box once, then per segment compute the logits band, an exact
// softmax (the whole row is in the buffer, so no online rescaling), and P.V.
// Parallel over batch x heads x tiles; every output row is written by exactly
// one task, so there is nothing to synchronize.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "fused_backend.hpp"
#include "fused_tile.hpp"
#include "parallel.hpp"

namespace nhood::cpu::fused {
namespace {

// Buffers of one thread, kept across calls (thread_local: the pool's workers
// and the calling thread each own one), so a call allocates nothing once the
// shapes have been seen: no page faults, no zero-fills of fresh vectors.
struct Workspace {
  Packed kpack, vpack;
  Segment seg;
  FloatBuf qs, S, O;
  std::vector<float> smax, ssum;
};

constexpr int kChunksPerThread = 32;

template <typename T>
void forward_impl(const Params& p) {
  const KernelTable& kt = kernels();
  const Dims dims(p);
  const std::vector<Span> tiles[3] = {axis_tiles(p.axis[0], kTileX), axis_tiles(p.axis[1], tile_y(p)),
                                      axis_tiles(p.axis[2], kTileZ)};
  const int64_t nty = int64_t(tiles[1].size()), ntz = int64_t(tiles[2].size());
  const int64_t ntiles = int64_t(tiles[0].size()) * nty * ntz;
  const int64_t group = p.heads / p.heads_kv;
  const float scale = float(p.scale);
  const T* q = static_cast<const T*>(p.q.data);
  T* out = static_cast<T*>(p.out.data);
  float* lse = static_cast<float*>(p.lse.data);

  const int64_t vec = kt.vec;
  const int64_t tail = dims.nadd ? (dims.nadd + vec - 1) / vec * vec : 0;  // additional-token logits
  const int64_t apadc = pad_to(dims.nadd) + kPad;                           // add_cols row stride

  // Many small chunks (a few tasks each): a worker that wakes late, or a
  // core shared with another process, then costs at most one small chunk of
  // imbalance at the end.
  parallel_for(p.batch * p.heads * ntiles, 1, kChunksPerThread, [&](int64_t begin, int64_t end) {
    static thread_local Workspace ws;
    Packed &kpack = ws.kpack, &vpack = ws.vpack;
    Segment& seg = ws.seg;
    FloatBuf &qs = ws.qs, &S = ws.S, &O = ws.O;
    std::vector<float>&smax = ws.smax, &ssum = ws.ssum;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t t = task % ntiles, h = (task / ntiles) % p.heads, b = task / (ntiles * p.heads);
      const Span s[3] = {tiles[0][size_t(t / (nty * ntz))], tiles[1][size_t(t / ntz % nty)], tiles[2][size_t(t % ntz)]};
      const BoxAxis box[3] = {box_axis(p.axis[0], s[0]), box_axis(p.axis[1], s[1]), box_axis(p.axis[2], s[2])};
      const int64_t hk = h / group;
      kpack.pack<T>(kt, p.k, p.add_k, dims.d, false, true, box, b, hk, dims.nadd);
      vpack.pack<T>(kt, p.v, p.add_v, dims.dv, true, false, box, b, hk, dims.nadd);
      // A band group's P.V runs over the union of its queries' windows with
      // P = 0 outside each one; 0 * inf would turn a non-finite value the
      // query does not attend into NaN. With such values in the box, groups
      // of one query: their band is exactly the query's window (IEEE
      // semantics of the reference, tests/test_errors.py).
      const bool v_finite = vpack.rows_finite;  // additional tokens are attended by every query
      const int64_t kstride = dims.d * kpack.wpad, vstride = vpack.nz * dims.dvpad;
      for (int64_t ix = 0; ix < s[0].count; ++ix)
        for (int64_t iy = 0; iy < s[1].count; ++iy) {
          const int64_t px = s[0].p0 + ix, py = s[1].p0 + iy;
          const int64_t x = s[0].g + p.axis[0].dilation * px, y = s[1].g + p.axis[1].dilation * py;
          make_segment(p, s, box, px, py, seg);
          qs.resize(size_t(seg.m * dims.dpad));
          for (int64_t i = 0; i < seg.m; ++i) {
            const int64_t z = s[2].g + p.axis[2].dilation * (s[2].p0 + i);
            load_row(q + offset(p.q, b, x, y, z, h), p.q.sd, dims.d, dims.dpad, scale, qs.data() + i * dims.dpad);
          }
          O.assign(size_t(seg.m * dims.dvpad), 0.0f);
          smax.resize(size_t(seg.m));
          ssum.resize(size_t(seg.m));
          const int64_t nr = seg.nrows(), nyw = seg.ry1 - seg.ry0;
          // Paired queries (both queries' logits of a key row in one vector)
          // when every group's band fits half a vector: 2 queries of a 7-wide
          // window on AVX-512 (3-wide on AVX2).
          const int64_t half = vec / 2;
          int64_t M = v_finite ? 2 : 1;
          bool paired = kt.band_qkq != nullptr && nyw == nr;
          for (int64_t i0 = 0; paired && i0 < seg.m; i0 += M)
            paired = seg.hi[size_t(std::min(i0 + M, seg.m) - 1)] - seg.lo[size_t(i0)] <= half;
          if (!paired) M = v_finite ? band_group_size(kt, seg, dims.d, dims.dvpad) : 1;
          for (int64_t i0 = 0; i0 < seg.m; i0 += M) {
            const int64_t mb = seg.m - i0 < M ? seg.m - i0 : M;
            const int64_t c0 = seg.lo[size_t(i0)], bw = seg.hi[size_t(i0 + mb - 1)] - c0;
            const float* A = qs.data() + i0 * dims.dpad;
            float* Og = O.data() + i0 * dims.dvpad;
            if (paired) {
              const int64_t body = nr * vec;
              S.resize(size_t(body + 2 * tail));
              kt.band_qkq(mb, nr, dims.d, A, dims.dpad, kpack.cols.data() + seg.box_row(0) * kstride + c0, kstride,
                          kpack.wpad, S.data());
              if (dims.nadd)
                kt.band_qk(mb, tail / vec, 1, dims.d, A, dims.dpad, kpack.add_cols.data(), 0, apadc,
                           S.data() + body, tail, tail);
              kt.band_softmaxq(mb, S.data(), nr, seg.lo.data() + i0, seg.hi.data() + i0, c0, dims.nadd, tail,
                               smax.data() + i0, ssum.data() + i0);
              kt.band_pv(mb, nr, bw, S.data(), vec, half,
                         vpack.rows.data() + (seg.box_row(0) * vpack.nz + c0) * dims.dvpad, vstride, dims.dvpad, Og,
                         dims.dvpad, dims.dvpad);
              if (dims.nadd)
                kt.band_pv(mb, 1, dims.nadd, S.data() + body, tail, tail, vpack.add_rows.data(), 0, dims.dvpad, Og,
                           dims.dvpad, dims.dvpad);
              continue;
            }
            const int64_t nvb = (bw + vec - 1) / vec, rowlen = nvb * vec, lds = nr * rowlen + tail;
            S.resize(size_t(mb * lds));
            for (int64_t rr0 = 0; rr0 < nr; rr0 += nyw)
              kt.band_qk(mb, nvb, nyw, dims.d, A, dims.dpad, kpack.cols.data() + seg.box_row(rr0) * kstride + c0,
                         kstride, kpack.wpad, S.data() + rr0 * rowlen, rowlen, lds);
            if (dims.nadd)
              kt.band_qk(mb, tail / vec, 1, dims.d, A, dims.dpad, kpack.add_cols.data(), 0, apadc,
                         S.data() + nr * rowlen, tail, lds);
            kt.band_softmax(mb, S.data(), lds, nr, rowlen, seg.lo.data() + i0, seg.hi.data() + i0, c0, dims.nadd,
                            smax.data() + i0, ssum.data() + i0);
            for (int64_t rr0 = 0; rr0 < nr; rr0 += nyw)
              kt.band_pv(mb, nyw, bw, S.data() + rr0 * rowlen, rowlen, lds,
                         vpack.rows.data() + (seg.box_row(rr0) * vpack.nz + c0) * dims.dvpad, vstride, dims.dvpad,
                         Og, dims.dvpad, dims.dvpad);
            if (dims.nadd)
              kt.band_pv(mb, 1, dims.nadd, S.data() + nr * rowlen, tail, lds, vpack.add_rows.data(), 0, dims.dvpad,
                         Og, dims.dvpad, dims.dvpad);
          }
          for (int64_t i = 0; i < seg.m; ++i) {
            const int64_t z = s[2].g + p.axis[2].dilation * (s[2].p0 + i);
            const SoftmaxStats st{smax[size_t(i)], ssum[size_t(i)]};
            store_row(out + offset(p.out, b, x, y, z, h), p.out.sd, dims.dv, O.data() + i * dims.dvpad, 1.0f / st.sum);
            if (lse) lse[offset(p.lse, b, x, y, z, h)] = st.lse();
          }
        }
    }
  });
}

}  // namespace

void forward(const Params& params, void*) {
  const Params p = canonical(params);
  switch (p.dtype) {
    case DType::float32: forward_impl<float>(p); break;
    case DType::float16: forward_impl<Half>(p); break;
    case DType::bfloat16: forward_impl<BFloat16>(p); break;
    case DType::float64: break;  // refused by unsupported_reason
  }
}

}  // namespace nhood::cpu::fused
