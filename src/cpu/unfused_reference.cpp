// The `reference` backend of the unfused QK/AV ops: float64 arithmetic, one
// row (query token, head) or one key token at a time, deterministic (every
// output element is written by one thread, sums in a fixed order).
#include <cmath>
#include <limits>
#include <vector>

#include "../unfused/backend.hpp"
#include "grid.hpp"
#include "parallel.hpp"
#include "scalar.hpp"

namespace nhood::cpu {
namespace {

using detail::AVParams;
using detail::BiasOperand;
using detail::QKParams;

// Column of key (x, y, z) in the row of a query whose window `w` holds it.
inline int64_t column(const Params& p, const Box& w, int64_t x, int64_t y, int64_t z) {
  return (detail::window_slot(w.axis[0], x) * p.axis[1].kernel + detail::window_slot(w.axis[1], y)) *
             p.axis[2].kernel +
         detail::window_slot(w.axis[2], z);
}

// Visits the window keys of query (x, y, z) with their weight column.
template <typename F>
void for_each_column(const Params& p, int64_t x, int64_t y, int64_t z, F&& f) {
  const Box w = window_box(p, x, y, z);
  for (int64_t i = 0; i < w.axis[0].count; ++i)
    for (int64_t j = 0; j < w.axis[1].count; ++j)
      for (int64_t k = 0; k < w.axis[2].count; ++k)
        f((i * p.axis[1].kernel + j) * p.axis[2].kernel + k, w.axis[0].first + i * w.axis[0].step,
          w.axis[1].first + j * w.axis[1].step, w.axis[2].first + k * w.axis[2].step);
}

inline int64_t bias_offset(const Params& p, const BiasOperand& b, int64_t h, const RowIndex& q, int64_t x, int64_t y,
                           int64_t z) {
  return h * b.sh + detail::bias_index(p.axis[0], q.x, x) * b.sx + detail::bias_index(p.axis[1], q.y, y) * b.sy +
         detail::bias_index(p.axis[2], q.z, z) * b.sz;
}

template <typename T>
struct Ops {
  static const T* in(const void* d) { return static_cast<const T*>(d); }
  static T* out(void* d) { return static_cast<T*>(d); }

  static void load_row(const void* data, int64_t base, int64_t sd, int64_t n, std::vector<double>& v) {
    v.resize(size_t(n));
    for (int64_t d = 0; d < n; ++d) v[size_t(d)] = load(in(data) + base + d * sd);
  }
  static double dot(const std::vector<double>& a, const void* data, int64_t base, int64_t sd) {
    double s = 0;
    for (size_t d = 0; d < a.size(); ++d) s += a[d] * load(in(data) + base + int64_t(d) * sd);
    return s;
  }
  static void axpy(std::vector<double>& acc, double c, const void* data, int64_t base, int64_t sd) {
    for (size_t d = 0; d < acc.size(); ++d) acc[d] += c * load(in(data) + base + int64_t(d) * sd);
  }
  static void store_row(void* data, int64_t base, int64_t sd, const std::vector<double>& v) {
    for (size_t d = 0; d < v.size(); ++d) store(out(data) + base + int64_t(d) * sd, v[d]);
  }

  // For every kv head row (b, key token, hk): acc = sum over the queries
  // attending that key and the heads of its group of coef(query row, column)
  // * vec(query row), written by `finish`. Shared by dK (QK) and dV (AV).
  template <typename Coef, typename Vec, typename Finish>
  static void gather_keys(const Params& p, int64_t dim, Coef&& coef, Vec&& vec, Finish&& finish) {
    const int64_t group = p.heads / p.heads_kv;
    parallel_for(p.batch * p.tokens() * p.heads_kv, 16, [&](int64_t begin, int64_t end) {
      std::vector<double> acc;
      for (int64_t row = begin; row < end; ++row) {
        const RowIndex r = split_row(p, row, p.heads_kv);
        acc.assign(size_t(dim), 0.0);
        inverse_window_box(p, r.x, r.y, r.z).for_each([&](int64_t x, int64_t y, int64_t z) {
          const int64_t c = column(p, window_box(p, x, y, z), r.x, r.y, r.z);
          for (int64_t h = r.h * group; h < (r.h + 1) * group; ++h) {
            const RowIndex qr{r.b, x, y, z, h};
            vec(qr, coef(qr, c), acc);
          }
        });
        finish(r, acc);
      }
    });
  }

  // Same for additional tokens, attended by every query (column n_window + a).
  template <typename Coef, typename Vec, typename Finish>
  static void gather_additional(const Params& p, int64_t n_window, int64_t dim, Coef&& coef, Vec&& vec,
                                Finish&& finish) {
    const int64_t group = p.heads / p.heads_kv;
    parallel_for(p.batch * p.n_additional * p.heads_kv, 1, [&](int64_t begin, int64_t end) {
      std::vector<double> acc;
      for (int64_t row = begin; row < end; ++row) {
        const int64_t hk = row % p.heads_kv;
        const int64_t a = (row / p.heads_kv) % p.n_additional;
        const int64_t b = row / (p.heads_kv * p.n_additional);
        acc.assign(size_t(dim), 0.0);
        for (int64_t x = 0; x < p.axis[0].length; ++x)
          for (int64_t y = 0; y < p.axis[1].length; ++y)
            for (int64_t z = 0; z < p.axis[2].length; ++z)
              for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
                const RowIndex qr{b, x, y, z, h};
                vec(qr, coef(qr, n_window + a), acc);
              }
        finish(b, a, hk, acc);
      }
    });
  }

  // ---- QK ----
  static void qk_forward(const QKParams& qp) {
    const Params& p = qp.shape;
    const int64_t group = p.heads / p.heads_kv;
    const double neg_inf = -std::numeric_limits<double>::infinity();
    parallel_for(p.batch * p.tokens() * p.heads, 16, [&](int64_t begin, int64_t end) {
      std::vector<double> q, row_w;
      for (int64_t row = begin; row < end; ++row) {
        const RowIndex r = split_row(p, row, p.heads);
        const int64_t hk = r.h / group;
        load_row(qp.query.data, offset(qp.query, r.b, r.x, r.y, r.z, r.h), qp.query.sd, p.head_dim, q);
        row_w.assign(size_t(qp.n_window + p.n_additional), neg_inf);
        for_each_column(p, r.x, r.y, r.z, [&](int64_t c, int64_t x, int64_t y, int64_t z) {
          double s = dot(q, qp.key.data, offset(qp.key, r.b, x, y, z, hk), qp.key.sd);
          if (qp.rpb.data) s += load(in(qp.rpb.data) + bias_offset(p, qp.rpb, r.h, r, x, y, z));
          row_w[size_t(c)] = s;
        });
        for (int64_t a = 0; a < p.n_additional; ++a)
          row_w[size_t(qp.n_window + a)] = dot(q, qp.add_k.data, offset(qp.add_k, r.b, a, hk), qp.add_k.sd);
        store_row(qp.weights.data, offset(qp.weights, r.b, r.x, r.y, r.z, r.h), qp.weights.sd, row_w);
      }
    });
  }

  static double d_weight(const QKParams& qp, const RowIndex& r, int64_t c) {
    return load(in(qp.d_weights.data) + offset(qp.d_weights, r.b, r.x, r.y, r.z, r.h) + c * qp.d_weights.sd);
  }

  static void qk_backward(const QKParams& qp) {
    const Params& p = qp.shape;
    const int64_t group = p.heads / p.heads_kv;
    // dQ: per query row, over its window and the additional tokens.
    parallel_for(p.batch * p.tokens() * p.heads, 16, [&](int64_t begin, int64_t end) {
      std::vector<double> acc;
      for (int64_t row = begin; row < end; ++row) {
        const RowIndex r = split_row(p, row, p.heads);
        const int64_t hk = r.h / group;
        acc.assign(size_t(p.head_dim), 0.0);
        for_each_column(p, r.x, r.y, r.z, [&](int64_t c, int64_t x, int64_t y, int64_t z) {
          axpy(acc, d_weight(qp, r, c), qp.key.data, offset(qp.key, r.b, x, y, z, hk), qp.key.sd);
        });
        for (int64_t a = 0; a < p.n_additional; ++a)
          axpy(acc, d_weight(qp, r, qp.n_window + a), qp.add_k.data, offset(qp.add_k, r.b, a, hk), qp.add_k.sd);
        store_row(qp.d_query.data, offset(qp.d_query, r.b, r.x, r.y, r.z, r.h), qp.d_query.sd, acc);
      }
    });
    auto coef = [&](const RowIndex& r, int64_t c) { return d_weight(qp, r, c); };
    auto query = [&](const RowIndex& r, double w, std::vector<double>& acc) {
      axpy(acc, w, qp.query.data, offset(qp.query, r.b, r.x, r.y, r.z, r.h), qp.query.sd);
    };
    gather_keys(p, p.head_dim, coef, query, [&](const RowIndex& r, const std::vector<double>& acc) {
      store_row(qp.d_key.data, offset(qp.d_key, r.b, r.x, r.y, r.z, r.h), qp.d_key.sd, acc);
    });
    if (p.n_additional > 0)
      gather_additional(p, qp.n_window, p.head_dim, coef, query,
                        [&](int64_t b, int64_t a, int64_t hk, const std::vector<double>& acc) {
                          store_row(qp.d_add_k.data, offset(qp.d_add_k, b, a, hk), qp.d_add_k.sd, acc);
                        });
    if (qp.d_rpb.data) rpb_backward(qp);
  }

  // dRPB[h, ...] = sum over batch and queries of the d_weights at the columns
  // that read that bias entry. One thread per head: deterministic.
  static void rpb_backward(const QKParams& qp) {
    const Params& p = qp.shape;
    const int64_t n0 = 2 * p.axis[0].kernel - 1, n1 = 2 * p.axis[1].kernel - 1, n2 = 2 * p.axis[2].kernel - 1;
    parallel_for(p.heads, 1, [&](int64_t begin, int64_t end) {
      std::vector<double> acc;
      for (int64_t h = begin; h < end; ++h) {
        acc.assign(size_t(n0 * n1 * n2), 0.0);
        for (int64_t b = 0; b < p.batch; ++b)
          for (int64_t x = 0; x < p.axis[0].length; ++x)
            for (int64_t y = 0; y < p.axis[1].length; ++y)
              for (int64_t z = 0; z < p.axis[2].length; ++z) {
                const RowIndex r{b, x, y, z, h};
                for_each_column(p, x, y, z, [&](int64_t c, int64_t kx, int64_t ky, int64_t kz) {
                  const int64_t i = (detail::bias_index(p.axis[0], x, kx) * n1 + detail::bias_index(p.axis[1], y, ky)) *
                                        n2 +
                                    detail::bias_index(p.axis[2], z, kz);
                  acc[size_t(i)] += d_weight(qp, r, c);
                });
              }
        for (int64_t i = 0; i < n0; ++i)
          for (int64_t j = 0; j < n1; ++j)
            for (int64_t k = 0; k < n2; ++k)
              store(out(qp.d_rpb.data) + h * qp.d_rpb.sh + i * qp.d_rpb.sx + j * qp.d_rpb.sy + k * qp.d_rpb.sz,
                    acc[size_t((i * n1 + j) * n2 + k)]);
      }
    });
  }

  // ---- AV ----
  static double weight(const AVParams& ap, const RowIndex& r, int64_t c) {
    return load(in(ap.weights.data) + offset(ap.weights, r.b, r.x, r.y, r.z, r.h) + c * ap.weights.sd);
  }

  static void av_forward(const AVParams& ap) {
    const Params& p = ap.shape;
    const int64_t group = p.heads / p.heads_kv;
    parallel_for(p.batch * p.tokens() * p.heads, 16, [&](int64_t begin, int64_t end) {
      std::vector<double> acc;
      for (int64_t row = begin; row < end; ++row) {
        const RowIndex r = split_row(p, row, p.heads);
        const int64_t hk = r.h / group;
        acc.assign(size_t(p.head_dim_v), 0.0);
        for_each_column(p, r.x, r.y, r.z, [&](int64_t c, int64_t x, int64_t y, int64_t z) {
          axpy(acc, weight(ap, r, c), ap.value.data, offset(ap.value, r.b, x, y, z, hk), ap.value.sd);
        });
        for (int64_t a = 0; a < p.n_additional; ++a)
          axpy(acc, weight(ap, r, ap.n_window + a), ap.add_v.data, offset(ap.add_v, r.b, a, hk), ap.add_v.sd);
        store_row(ap.out.data, offset(ap.out, r.b, r.x, r.y, r.z, r.h), ap.out.sd, acc);
      }
    });
  }

  static void av_backward(const AVParams& ap) {
    const Params& p = ap.shape;
    const int64_t group = p.heads / p.heads_kv;
    // dW: per query row; unused columns get 0.
    parallel_for(p.batch * p.tokens() * p.heads, 16, [&](int64_t begin, int64_t end) {
      std::vector<double> dout, dw;
      for (int64_t row = begin; row < end; ++row) {
        const RowIndex r = split_row(p, row, p.heads);
        const int64_t hk = r.h / group;
        load_row(ap.d_out.data, offset(ap.d_out, r.b, r.x, r.y, r.z, r.h), ap.d_out.sd, p.head_dim_v, dout);
        dw.assign(size_t(ap.n_window + p.n_additional), 0.0);
        for_each_column(p, r.x, r.y, r.z, [&](int64_t c, int64_t x, int64_t y, int64_t z) {
          dw[size_t(c)] = dot(dout, ap.value.data, offset(ap.value, r.b, x, y, z, hk), ap.value.sd);
        });
        for (int64_t a = 0; a < p.n_additional; ++a)
          dw[size_t(ap.n_window + a)] = dot(dout, ap.add_v.data, offset(ap.add_v, r.b, a, hk), ap.add_v.sd);
        store_row(ap.d_weights.data, offset(ap.d_weights, r.b, r.x, r.y, r.z, r.h), ap.d_weights.sd, dw);
      }
    });
    auto coef = [&](const RowIndex& r, int64_t c) { return weight(ap, r, c); };
    auto d_out = [&](const RowIndex& r, double w, std::vector<double>& acc) {
      axpy(acc, w, ap.d_out.data, offset(ap.d_out, r.b, r.x, r.y, r.z, r.h), ap.d_out.sd);
    };
    gather_keys(p, p.head_dim_v, coef, d_out, [&](const RowIndex& r, const std::vector<double>& acc) {
      store_row(ap.d_value.data, offset(ap.d_value, r.b, r.x, r.y, r.z, r.h), ap.d_value.sd, acc);
    });
    if (p.n_additional > 0)
      gather_additional(p, ap.n_window, p.head_dim_v, coef, d_out,
                        [&](int64_t b, int64_t a, int64_t hk, const std::vector<double>& acc) {
                          store_row(ap.d_add_v.data, offset(ap.d_add_v, b, a, hk), ap.d_add_v.sd, acc);
                        });
  }
};

std::string supports_everything(const Params&, bool) { return {}; }

void qk_forward(const QKParams& p, void*) {
  visit_dtype(p.shape.dtype, [&](auto tag) { Ops<decltype(tag)>::qk_forward(p); });
}
void qk_backward(const QKParams& p, void*) {
  visit_dtype(p.shape.dtype, [&](auto tag) { Ops<decltype(tag)>::qk_backward(p); });
}
void av_forward(const AVParams& p, void*) {
  visit_dtype(p.shape.dtype, [&](auto tag) { Ops<decltype(tag)>::av_forward(p); });
}
void av_backward(const AVParams& p, void*) {
  visit_dtype(p.shape.dtype, [&](auto tag) { Ops<decltype(tag)>::av_backward(p); });
}

}  // namespace
}  // namespace nhood::cpu

namespace nhood::detail {
UnfusedBackendEntry unfused_reference_backend() {
  return {Backend::reference, DeviceKind::cpu, cpu::supports_everything,
          cpu::qk_forward, cpu::qk_backward, cpu::av_forward, cpu::av_backward};
}
}  // namespace nhood::detail
