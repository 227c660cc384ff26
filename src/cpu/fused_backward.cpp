// Backward pass of the `cpu` backend.
//
// Work unit: (batch, kv head, part). A unit walks the query tiles of every
// query head sharing that kv head (GQA), recomputes each segment's softmax
// exactly from the logits (as `reference` does, instead of trusting the
// float32 lse), writes dQ directly (each query row belongs to one unit), and
// accumulates dK/dV in a float32 buffer private to the unit. When there are
// fewer (batch, kv head) pairs than 2x threads, each pair's tiles are split
// into `parts` with separate buffers; a second pass sums the parts in a fixed
// order, so results do not depend on scheduling (deterministic, no races).
//
// Buffers (packed KV, logits, rows, the dK/dV accumulators) are kept across
// calls (thread_local workspace as in the forward): no allocation, page
// faults or zero-fill pass per call. Accumulators start each unit at zero
// because whoever reads a finished row (the store at the end of a unit, or
// the part sum) zeroes it right after, while it is in L1; a flag notes a
// buffer left dirty by an interrupted call, which then gets one full fill.
#include <algorithm>
#include <cstring>

#include "fused_backend.hpp"
#include "fused_tile.hpp"
#include "parallel.hpp"

namespace nhood::cpu::fused {
namespace {

// A float32 accumulator that is all zeros between uses (`clean`). Buffers
// above kKeepFloats are given back at the end of a call instead of being
// kept (a large problem would otherwise hold threads x its size for good).
struct ZeroBuf {
  FloatBuf data;
  bool clean = true;
  static constexpr size_t kKeepFloats = size_t(4) << 20;  // 16 MiB
  float* get(size_t n) {
    if (data.size() < n) {
      data = FloatBuf();
      data.resize(n);
      clean = false;
    }
    if (!clean) std::fill(data.begin(), data.end(), 0.0f);
    clean = false;  // until the user has zeroed what it wrote
    return data.data();
  }
  void done() {  // the user zeroed every element it wrote
    clean = true;
    if (data.size() > kKeepFloats) data = FloatBuf();
  }
};

struct Workspace {
  Packed kpack, vpack;
  Segment seg;
  FloatBuf qs, dos, prob, dprob, pc, dc, acc;
  ZeroBuf local;  // one unit's dK/dV (when units are not split into parts)
};

template <typename T>
void backward_impl(const Params& p) {
  const KernelTable& kt = kernels();
  const Dims dims(p);
  const std::vector<Span> tiles[3] = {axis_tiles(p.axis[0], kTileX), axis_tiles(p.axis[1], tile_y(p)),
                                      axis_tiles(p.axis[2], kTileZ)};
  const int64_t nty = int64_t(tiles[1].size()), ntz = int64_t(tiles[2].size());
  const int64_t ntiles = int64_t(tiles[0].size()) * nty * ntz;
  const int64_t group = p.heads / p.heads_kv;
  const int64_t items = group * ntiles;  // (query head in group, tile) per unit
  const int64_t units = p.batch * p.heads_kv;
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(items, (2 * num_threads() + units - 1) / units));
  const int64_t ly = p.axis[1].length, lz = p.axis[2].length, tokens = p.tokens();
  const int64_t keys = tokens + dims.nadd;  // accumulator rows: grid keys then additional keys
  const int64_t per_part = keys * (dims.dpad + dims.dvpad);
  // Shared part buffers only when units are split (owned by the calling
  // thread, kept across its calls); otherwise each thread keeps one unit's
  // accumulator (memory: threads x one unit, not all units).
  static thread_local ZeroBuf grads_buf;
  float* const grads = parts > 1 ? grads_buf.get(size_t(units * parts * per_part)) : nullptr;
  T* dk = static_cast<T*>(p.dk.data);
  T* dv = static_cast<T*>(p.dv.data);
  T* dak = static_cast<T*>(p.d_add_k.data);
  T* dav = static_cast<T*>(p.d_add_v.data);
  // Stores one key's finished float32 gradients (dK already carries the
  // scale: q was pre-scaled).
  auto store_key = [&](int64_t unit, int64_t key, const float* gk, const float* gv) {
    const int64_t hk = unit % p.heads_kv, b = unit / p.heads_kv;
    if (key < tokens) {
      const int64_t z = key % lz, y = key / lz % ly, x = key / (lz * ly);
      store_row(dk + offset(p.dk, b, x, y, z, hk), p.dk.sd, dims.d, gk, 1.0f);
      store_row(dv + offset(p.dv, b, x, y, z, hk), p.dv.sd, dims.dv, gv, 1.0f);
    } else {
      const int64_t a = key - tokens;
      store_row(dak + offset(p.d_add_k, b, a, hk), p.d_add_k.sd, dims.d, gk, 1.0f);
      store_row(dav + offset(p.d_add_v, b, a, hk), p.d_add_v.sd, dims.dv, gv, 1.0f);
    }
  };
  const float scale = float(p.scale);
  const T* q = static_cast<const T*>(p.q.data);
  const T* dout = static_cast<const T*>(p.d_out.data);
  T* dq = static_cast<T*>(p.dq.data);

  parallel_for(units * parts, 1, [&](int64_t begin, int64_t end) {
    static thread_local Workspace ws;
    Packed &kpack = ws.kpack, &vpack = ws.vpack;
    Segment& seg = ws.seg;
    FloatBuf &qs = ws.qs, &dos = ws.dos, &prob = ws.prob, &dprob = ws.dprob, &pc = ws.pc, &dc = ws.dc, &acc = ws.acc;
    acc.resize(size_t(dims.dpad));
    for (int64_t work = begin; work < end; ++work) {
      const int64_t part = work % parts, unit = work / parts;
      const int64_t hk = unit % p.heads_kv, b = unit / p.heads_kv;
      float* dk_acc = parts > 1 ? grads + work * per_part : ws.local.get(size_t(per_part));
      float* dv_acc = dk_acc + keys * dims.dpad;
      for (int64_t item = items * part / parts; item < items * (part + 1) / parts; ++item) {
        const int64_t h = hk * group + item / ntiles, t = item % ntiles;
        const Span s[3] = {tiles[0][size_t(t / (nty * ntz))], tiles[1][size_t(t / ntz % nty)],
                           tiles[2][size_t(t % ntz)]};
        const BoxAxis box[3] = {box_axis(p.axis[0], s[0]), box_axis(p.axis[1], s[1]), box_axis(p.axis[2], s[2])};
        kpack.pack<T>(kt, p.k, p.add_k, dims.d, true, true, box, b, hk, dims.nadd);
        vpack.pack<T>(kt, p.v, p.add_v, dims.dv, false, true, box, b, hk, dims.nadd);
        for (int64_t ix = 0; ix < s[0].count; ++ix)
          for (int64_t iy = 0; iy < s[1].count; ++iy) {
            const int64_t px = s[0].p0 + ix, py = s[1].p0 + iy;
            const int64_t x = s[0].g + p.axis[0].dilation * px, y = s[1].g + p.axis[1].dilation * py;
            make_segment(p, s, box, px, py, seg);
            qs.resize(size_t(seg.m * dims.dpad));
            dos.resize(size_t(seg.m * dims.dvpad));
            for (int64_t i = 0; i < seg.m; ++i) {
              const int64_t z = s[2].g + p.axis[2].dilation * (s[2].p0 + i);
              load_row(q + offset(p.q, b, x, y, z, h), p.q.sd, dims.d, dims.dpad, scale, qs.data() + i * dims.dpad);
              load_row(dout + offset(p.d_out, b, x, y, z, h), p.d_out.sd, dims.dv, dims.dvpad, 1.0f,
                       dos.data() + i * dims.dvpad);
            }
            const int64_t lds = logits_stride(seg, kpack, dims);
            prob.resize(size_t(seg.m * lds));
            dprob.resize(size_t(seg.m * lds));
            pc.resize(size_t(lds));
            dc.resize(size_t(lds));
            band_logits(kt, seg, kpack, dims.d, qs.data(), dims.dpad, dims.nadd, prob.data(), lds);
            band_logits(kt, seg, vpack, dims.dv, dos.data(), dims.dvpad, dims.nadd, dprob.data(), lds);
            const int64_t nr = seg.nrows();
            for (int64_t i = 0; i < seg.m; ++i) {
              const int64_t z = s[2].g + p.axis[2].dilation * (s[2].p0 + i);
              const int64_t lo = seg.lo[size_t(i)], hi = seg.hi[size_t(i)];
              float* pr = pc.data();  // compact P, then normalized
              float* ds = dc.data();  // compact dP, then dS
              const int64_t n = gather_row(seg, i, kpack.wpad, dims.nadd, prob.data() + i * lds, pr);
              gather_row(seg, i, kpack.wpad, dims.nadd, dprob.data() + i * lds, ds);
              const float inv = 1.0f / softmax_unnormalized(kt, pr, n).sum;
              float delta = 0;
              for (int64_t j = 0; j < n; ++j) {
                pr[j] *= inv;
                delta += pr[j] * ds[j];
              }
              for (int64_t j = 0; j < n; ++j) ds[j] = pr[j] * (ds[j] - delta);
              std::fill(acc.begin(), acc.end(), 0.0f);
              combine_row(kt, seg, i, kpack, dims.dpad, dims.nadd, ds, acc.data());
              store_row(dq + offset(p.dq, b, x, y, z, h), p.dq.sd, dims.d, acc.data(), scale);
              // dK_j += dS_ij * (scale * q_i), dV_j += P_ij * dO_i
              const float* qi = qs.data() + i * dims.dpad;
              const float* doi = dos.data() + i * dims.dvpad;
              int64_t j = 0;
              for (int64_t rr = 0; rr < nr; ++rr) {
                const int64_t br = seg.box_row(rr);
                const int64_t kx = box[0].token(br / box[1].size()), ky = box[1].token(br % box[1].size());
                for (int64_t w = lo; w < hi; ++w, ++j) {
                  const int64_t key = (kx * ly + ky) * lz + box[2].token(w);
                  kt.axpy(dims.dpad, ds[j], qi, dk_acc + key * dims.dpad);
                  kt.axpy(dims.dvpad, pr[j], doi, dv_acc + key * dims.dvpad);
                }
              }
              for (int64_t a = 0; a < dims.nadd; ++a, ++j) {
                kt.axpy(dims.dpad, ds[j], qi, dk_acc + (tokens + a) * dims.dpad);
                kt.axpy(dims.dvpad, pr[j], doi, dv_acc + (tokens + a) * dims.dvpad);
              }
            }
          }
      }
      if (parts == 1) {
        for (int64_t key = 0; key < keys; ++key) {
          float* gk = dk_acc + key * dims.dpad;
          float* gv = dv_acc + key * dims.dvpad;
          store_key(unit, key, gk, gv);
          std::memset(gk, 0, size_t(dims.dpad) * sizeof(float));
          std::memset(gv, 0, size_t(dims.dvpad) * sizeof(float));
        }
        ws.local.done();
      }
    }
  });
  if (parts == 1) return;

  // Sum the parts of each (batch, kv head) in part order and store.
  parallel_for(units * keys, 64, [&](int64_t begin, int64_t end) {
    std::vector<float> sk(size_t(dims.dpad)), sv(size_t(dims.dvpad));
    for (int64_t row = begin; row < end; ++row) {
      const int64_t key = row % keys, unit = row / keys;
      sk.assign(size_t(dims.dpad), 0.0f);
      sv.assign(size_t(dims.dvpad), 0.0f);
      for (int64_t part = 0; part < parts; ++part) {
        float* base = grads + (unit * parts + part) * per_part;
        float* gk = base + key * dims.dpad;
        float* gv = base + keys * dims.dpad + key * dims.dvpad;
        kt.axpy(dims.dpad, 1.0f, gk, sk.data());
        kt.axpy(dims.dvpad, 1.0f, gv, sv.data());
        std::memset(gk, 0, size_t(dims.dpad) * sizeof(float));
        std::memset(gv, 0, size_t(dims.dvpad) * sizeof(float));
      }
      store_key(unit, key, sk.data(), sv.data());
    }
  });
  grads_buf.done();
}

}  // namespace

void backward(const Params& params, void*) {
  const Params p = canonical(params);
  switch (p.dtype) {
    case DType::float32: backward_impl<float>(p); break;
    case DType::float16: backward_impl<Half>(p); break;
    case DType::bfloat16: backward_impl<BFloat16>(p); break;
    case DType::float64: break;  // refused by unsupported_reason
  }
}

}  // namespace nhood::cpu::fused
