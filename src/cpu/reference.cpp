// The `reference` backend: exact and simple, float64 arithmetic throughout,
// every feature. It is the oracle inside the library (python -m nhood checks
// other backends against it), so it favors obviousness over speed: one row
// (query token, head) at a time, logits materialized per row.
//
// Backward recomputes each row's softmax in float64 instead of reading the
// float32 lse, so float64 gradients are exact to float64 rounding.
#include <cmath>
#include <limits>
#include <vector>

#include "../backend.hpp"
#include "grid.hpp"
#include "parallel.hpp"
#include "scalar.hpp"

namespace nhood::cpu {
namespace {

template <typename T>
struct Reference {
  const Params& p;
  int64_t group;  // query heads per kv head

  explicit Reference(const Params& params) : p(params), group(params.heads / params.heads_kv) {}

  const T* ptr(const Operand& o) const { return static_cast<const T*>(o.data); }
  T* mut(const Operand& o) const { return static_cast<T*>(o.data); }
  const T* ptr(const TokenOperand& o) const { return static_cast<const T*>(o.data); }
  T* mut(const TokenOperand& o) const { return static_cast<T*>(o.data); }

  template <typename Op>
  void load_vector(const Op& o, int64_t base, int64_t n, std::vector<double>& out) const {
    out.resize(n);
    for (int64_t d = 0; d < n; ++d) out[d] = load(ptr(o) + base + d * o.sd);
  }

  template <typename Op>
  double dot(const std::vector<double>& a, const Op& o, int64_t base) const {
    double s = 0;
    for (size_t d = 0; d < a.size(); ++d) s += a[d] * load(ptr(o) + base + int64_t(d) * o.sd);
    return s;
  }

  // Visits every key of a row's softmax in a fixed order: window keys, then
  // additional keys. f(key_operand, value_operand, key_base, value_base).
  template <typename F>
  void for_each_key(const RowIndex& r, F&& f) const {
    const int64_t hk = r.h / group;
    window_box(p, r.x, r.y, r.z).for_each([&](int64_t x, int64_t y, int64_t z) {
      f(p.k, p.v, offset(p.k, r.b, x, y, z, hk), offset(p.v, r.b, x, y, z, hk));
    });
    for (int64_t a = 0; a < p.n_additional; ++a)
      f(p.add_k, p.add_v, offset(p.add_k, r.b, a, hk), offset(p.add_v, r.b, a, hk));
  }

  // Fills `prob` with the row's softmax probabilities; returns its lse.
  double softmax_row(const RowIndex& r, const std::vector<double>& q, std::vector<double>& prob) const {
    prob.clear();
    for_each_key(r, [&](const auto& ko, const auto&, int64_t kb, int64_t) { prob.push_back(p.scale * dot(q, ko, kb)); });
    double m = -std::numeric_limits<double>::infinity();
    for (double l : prob) m = (l > m || std::isnan(l)) ? l : m;  // NaN propagates
    double sum = 0;
    for (double& l : prob) sum += (l = std::exp(l - m));
    for (double& l : prob) l /= sum;
    return m + std::log(sum);
  }

  void forward() const {
    const int64_t rows = p.batch * p.tokens() * p.heads;
    parallel_for(rows, 16, [&](int64_t begin, int64_t end) {
      std::vector<double> q, prob, acc;
      for (int64_t row = begin; row < end; ++row) {
        const RowIndex r = split_row(p, row, p.heads);
        load_vector(p.q, offset(p.q, r.b, r.x, r.y, r.z, r.h), p.head_dim, q);
        const double lse = softmax_row(r, q, prob);
        acc.assign(p.head_dim_v, 0.0);
        size_t i = 0;
        for_each_key(r, [&](const auto&, const auto& vo, int64_t, int64_t vb) {
          for (int64_t d = 0; d < p.head_dim_v; ++d) acc[d] += prob[i] * load(ptr(vo) + vb + d * vo.sd);
          ++i;
        });
        T* o = mut(p.out) + offset(p.out, r.b, r.x, r.y, r.z, r.h);
        for (int64_t d = 0; d < p.head_dim_v; ++d) store(o + d * p.out.sd, acc[d]);
        if (p.lse.data)
          static_cast<float*>(p.lse.data)[offset(p.lse, r.b, r.x, r.y, r.z, r.h)] = float(lse);
      }
    });
  }

  // Per-row statistics kept between the backward passes.
  struct RowStats {
    double lse;    // log-sum-exp of the row's logits
    double delta;  // sum_j P_ij dP_ij  (= <dO_i, O_i> in exact arithmetic)
  };

  int64_t row_id(int64_t b, int64_t x, int64_t y, int64_t z, int64_t h) const {
    return (((b * p.axis[0].length + x) * p.axis[1].length + y) * p.axis[2].length + z) * p.heads + h;
  }

  // Pass 1: dQ and the row statistics.
  void backward_queries(std::vector<RowStats>& stats) const {
    const int64_t rows = p.batch * p.tokens() * p.heads;
    parallel_for(rows, 16, [&](int64_t begin, int64_t end) {
      std::vector<double> q, dout, prob, dprob, acc;
      for (int64_t row = begin; row < end; ++row) {
        const RowIndex r = split_row(p, row, p.heads);
        load_vector(p.q, offset(p.q, r.b, r.x, r.y, r.z, r.h), p.head_dim, q);
        load_vector(p.d_out, offset(p.d_out, r.b, r.x, r.y, r.z, r.h), p.head_dim_v, dout);
        const double lse = softmax_row(r, q, prob);
        dprob.clear();
        for_each_key(r, [&](const auto&, const auto& vo, int64_t, int64_t vb) { dprob.push_back(dot(dout, vo, vb)); });
        double delta = 0;
        for (size_t i = 0; i < prob.size(); ++i) delta += prob[i] * dprob[i];
        acc.assign(p.head_dim, 0.0);
        size_t i = 0;
        for_each_key(r, [&](const auto& ko, const auto&, int64_t kb, int64_t) {
          const double ds = prob[i] * (dprob[i] - delta);
          for (int64_t d = 0; d < p.head_dim; ++d) acc[d] += ds * load(ptr(ko) + kb + d * ko.sd);
          ++i;
        });
        T* dq = mut(p.dq) + offset(p.dq, r.b, r.x, r.y, r.z, r.h);
        for (int64_t d = 0; d < p.head_dim; ++d) store(dq + d * p.dq.sd, p.scale * acc[d]);
        stats[row] = {lse, delta};
      }
    });
  }

  // Gradient contributions of query row (b, x, y, z, h) to one key/value pair.
  void accumulate_key(const std::vector<RowStats>& stats, int64_t b, int64_t x, int64_t y, int64_t z, int64_t h,
                      const std::vector<double>& key, const std::vector<double>& value, std::vector<double>& dk,
                      std::vector<double>& dv) const {
    const RowStats& st = stats[row_id(b, x, y, z, h)];
    const int64_t qb = offset(p.q, b, x, y, z, h);
    const int64_t ob = offset(p.d_out, b, x, y, z, h);
    double logit = 0, dprob = 0;
    for (int64_t d = 0; d < p.head_dim; ++d) logit += key[d] * load(ptr(p.q) + qb + d * p.q.sd);
    for (int64_t d = 0; d < p.head_dim_v; ++d) dprob += value[d] * load(ptr(p.d_out) + ob + d * p.d_out.sd);
    const double prob = std::exp(p.scale * logit - st.lse);
    const double ds = prob * (dprob - st.delta);
    for (int64_t d = 0; d < p.head_dim; ++d) dk[d] += p.scale * ds * load(ptr(p.q) + qb + d * p.q.sd);
    for (int64_t d = 0; d < p.head_dim_v; ++d) dv[d] += prob * load(ptr(p.d_out) + ob + d * p.d_out.sd);
  }

  template <typename Op>
  void store_vector(const Op& o, int64_t base, const std::vector<double>& v) const {
    for (size_t d = 0; d < v.size(); ++d) store(mut(o) + base + int64_t(d) * o.sd, v[d]);
  }

  // Pass 2: dK, dV of window keys, gathered over each key's inverse window.
  void backward_keys(const std::vector<RowStats>& stats) const {
    const int64_t rows = p.batch * p.tokens() * p.heads_kv;
    parallel_for(rows, 16, [&](int64_t begin, int64_t end) {
      std::vector<double> key, value, dk, dv;
      for (int64_t row = begin; row < end; ++row) {
        const RowIndex r = split_row(p, row, p.heads_kv);
        load_vector(p.k, offset(p.k, r.b, r.x, r.y, r.z, r.h), p.head_dim, key);
        load_vector(p.v, offset(p.v, r.b, r.x, r.y, r.z, r.h), p.head_dim_v, value);
        dk.assign(p.head_dim, 0.0);
        dv.assign(p.head_dim_v, 0.0);
        inverse_window_box(p, r.x, r.y, r.z).for_each([&](int64_t x, int64_t y, int64_t z) {
          for (int64_t h = r.h * group; h < (r.h + 1) * group; ++h)
            accumulate_key(stats, r.b, x, y, z, h, key, value, dk, dv);
        });
        store_vector(p.dk, offset(p.dk, r.b, r.x, r.y, r.z, r.h), dk);
        store_vector(p.dv, offset(p.dv, r.b, r.x, r.y, r.z, r.h), dv);
      }
    });
  }

  // Pass 3: additional keys/values, attended by every query.
  void backward_additional(const std::vector<RowStats>& stats) const {
    const int64_t rows = p.batch * p.n_additional * p.heads_kv;
    parallel_for(rows, 1, [&](int64_t begin, int64_t end) {
      std::vector<double> key, value, dk, dv;
      for (int64_t row = begin; row < end; ++row) {
        const int64_t hk = row % p.heads_kv;
        const int64_t a = (row / p.heads_kv) % p.n_additional;
        const int64_t b = row / (p.heads_kv * p.n_additional);
        load_vector(p.add_k, offset(p.add_k, b, a, hk), p.head_dim, key);
        load_vector(p.add_v, offset(p.add_v, b, a, hk), p.head_dim_v, value);
        dk.assign(p.head_dim, 0.0);
        dv.assign(p.head_dim_v, 0.0);
        for (int64_t x = 0; x < p.axis[0].length; ++x)
          for (int64_t y = 0; y < p.axis[1].length; ++y)
            for (int64_t z = 0; z < p.axis[2].length; ++z)
              for (int64_t h = hk * group; h < (hk + 1) * group; ++h)
                accumulate_key(stats, b, x, y, z, h, key, value, dk, dv);
        store_vector(p.d_add_k, offset(p.d_add_k, b, a, hk), dk);
        store_vector(p.d_add_v, offset(p.d_add_v, b, a, hk), dv);
      }
    });
  }

  void backward() const {
    std::vector<RowStats> stats(size_t(p.batch * p.tokens() * p.heads));
    backward_queries(stats);
    backward_keys(stats);
    if (p.n_additional > 0) backward_additional(stats);
  }
};

std::string supports_everything(const Params&, bool) { return {}; }

void run_forward(const Params& p, void*) {
  visit_dtype(p.dtype, [&](auto tag) { Reference<decltype(tag)>(p).forward(); });
}

void run_backward(const Params& p, void*) {
  visit_dtype(p.dtype, [&](auto tag) { Reference<decltype(tag)>(p).backward(); });
}

}  // namespace
}  // namespace nhood::cpu

namespace nhood::detail {
BackendEntry reference_backend() {
  return {Backend::reference, DeviceKind::cpu, cpu::supports_everything, cpu::run_forward, cpu::run_backward};
}
}  // namespace nhood::detail
