// Forward pass of the `cpu` backend: per (batch, head, query tile), pack the
// tile's KV box once, then per segment compute the logits band, an exact
// softmax (the whole row is in the buffer, so no online rescaling), and P.V.
// Parallel over batch x heads x tiles; every output row is written by exactly
// one task, so there is nothing to synchronize.
#include "fused_backend.hpp"
#include "fused_tile.hpp"
#include "parallel.hpp"

namespace nhood::cpu::fused {
namespace {

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

  parallel_for(p.batch * p.heads * ntiles, 1, [&](int64_t begin, int64_t end) {
    Packed kpack, vpack;
    Segment seg;
    std::vector<float> qs, logits, prob, acc(size_t(dims.dvpad));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t t = task % ntiles, h = (task / ntiles) % p.heads, b = task / (ntiles * p.heads);
      const Span s[3] = {tiles[0][size_t(t / (nty * ntz))], tiles[1][size_t(t / ntz % nty)], tiles[2][size_t(t % ntz)]};
      const BoxAxis box[3] = {box_axis(p.axis[0], s[0]), box_axis(p.axis[1], s[1]), box_axis(p.axis[2], s[2])};
      const int64_t hk = h / group;
      kpack.pack<T>(p.k, p.add_k, dims.d, false, true, box, b, hk, dims.nadd);
      vpack.pack<T>(p.v, p.add_v, dims.dv, true, false, box, b, hk, dims.nadd);
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
          const int64_t lds = logits_stride(seg, kpack, dims);
          logits.resize(size_t(seg.m * lds));
          band_logits(kt, seg, kpack, dims.d, qs.data(), dims.dpad, dims.nadd, logits.data(), lds);
          for (int64_t i = 0; i < seg.m; ++i) {
            const int64_t z = s[2].g + p.axis[2].dilation * (s[2].p0 + i);
            prob.resize(size_t(lds));
            const int64_t n = gather_row(seg, i, kpack.wpad, dims.nadd, logits.data() + i * lds, prob.data());
            const SoftmaxStats st = softmax_unnormalized(kt, prob.data(), n);
            acc.assign(size_t(dims.dvpad), 0.0f);
            combine_row(kt, seg, i, vpack, dims.dvpad, dims.nadd, prob.data(), acc.data());
            store_row(out + offset(p.out, b, x, y, z, h), p.out.sd, dims.dv, acc.data(), 1.0f / st.sum);
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
