// Calls the C++ API on raw pointers: forward/backward on the CPU reference
// backend against a brute-force dense computation, plus error paths.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "nhood/nhood.hpp"

namespace {

int failures = 0;
void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "FAILED: %s\n", what);
    ++failures;
  }
}

// Dense 1-D attention with the mask written straight from the rule in DESIGN.md.
bool in_window_1d(int64_t i, int64_t j, int64_t L, int64_t K) {
  const int64_t left = K / 2, right = K - 1 - left;
  int64_t start = std::max<int64_t>(i - left, 0);
  if (i + right >= L) start += L - right - i - 1;
  return j >= start && j < start + K;
}

}  // namespace

int main() {
  const int64_t B = 2, L = 11, H = 2, D = 5, K = 4;
  std::mt19937 rng(7);
  std::normal_distribution<double> normal;
  const int64_t shape[4] = {B, L, H, D};
  std::vector<double> q(B * L * H * D), k(q.size()), v(q.size()), out(q.size(), NAN), dout(q.size());
  std::vector<double> dq(q.size(), NAN), dk(q.size(), NAN), dv(q.size(), NAN);
  std::vector<float> lse(B * L * H, NAN);
  for (auto* buf : {&q, &k, &v, &dout})
    for (double& x : *buf) x = normal(rng);
  using nhood::DType;
  const nhood::Device cpu{};
  auto view = [&](std::vector<double>& buf) { return nhood::contiguous_view(buf.data(), DType::float64, cpu, 4, shape); };
  const int64_t lse_shape[3] = {B, L, H};
  nhood::TensorView lse_view = nhood::contiguous_view(lse.data(), DType::float32, cpu, 3, lse_shape);

  nhood::WindowArgs w;
  w.rank = 1;
  w.kernel_size[0] = K;
  nhood::ForwardTensors f{view(q), view(k), view(v), view(out), &lse_view};
  const nhood::Problem problem = nhood::make_problem(w, f.query, f.key, f.value);
  nhood::Options options;
  options.backend = nhood::Backend::reference;
  nhood::forward(problem, f, options);

  double max_err = 0, lse_err = 0;  // lse is float32
  const double scale = 1.0 / std::sqrt(double(D));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < L; ++i) {
        std::vector<double> p(L, 0.0);
        double m = -INFINITY, sum = 0;
        for (int64_t j = 0; j < L; ++j) {
          if (!in_window_1d(i, j, L, K)) continue;
          double s = 0;
          for (int64_t d = 0; d < D; ++d) s += q[((b * L + i) * H + h) * D + d] * k[((b * L + j) * H + h) * D + d];
          p[j] = s * scale;
          m = std::max(m, p[j]);
        }
        for (int64_t j = 0; j < L; ++j) sum += in_window_1d(i, j, L, K) ? std::exp(p[j] - m) : 0.0;
        for (int64_t d = 0; d < D; ++d) {
          double o = 0;
          for (int64_t j = 0; j < L; ++j)
            if (in_window_1d(i, j, L, K)) o += std::exp(p[j] - m) / sum * v[((b * L + j) * H + h) * D + d];
          max_err = std::max(max_err, std::abs(o - out[((b * L + i) * H + h) * D + d]));
        }
        lse_err = std::max(lse_err, std::abs(double(lse[(b * L + i) * H + h]) - (m + std::log(sum))));
      }
  check(max_err < 1e-12, "forward matches dense reference");
  check(lse_err < 1e-6, "lse matches dense reference");

  nhood::BackwardTensors bw{view(q), view(k), view(v), view(out), lse_view, view(dout), view(dq), view(dk), view(dv)};
  nhood::backward(problem, bw, options);
  // Gradient check of one dq entry by central differences.
  {
    auto loss = [&]() {
      std::vector<double> o2(q.size());
      nhood::ForwardTensors f2{view(q), view(k), view(v), view(o2)};
      nhood::forward(problem, f2, options);
      double s = 0;
      for (size_t i = 0; i < o2.size(); ++i) s += o2[i] * dout[i];
      return s;
    };
    bool all_ok = true;
    for (std::vector<double>* buf : {&q, &k, &v}) {
      std::vector<double>& grad = buf == &q ? dq : buf == &k ? dk : dv;
      for (size_t idx : {size_t(3), size_t(57), q.size() - 2}) {
        const double saved = (*buf)[idx], eps = 1e-6;
        (*buf)[idx] = saved + eps;
        const double up = loss();
        (*buf)[idx] = saved - eps;
        const double down = loss();
        (*buf)[idx] = saved;
        const double fd = (up - down) / (2 * eps);
        if (std::abs(fd - grad[idx]) > 1e-6 * (1 + std::abs(fd))) all_ok = false;
      }
    }
    check(all_ok, "backward matches finite differences");
  }

  // Errors: kernel larger than the input; nothing written.
  {
    nhood::WindowArgs bad = w;
    bad.kernel_size[0] = L + 1;
    bool threw = false;
    try {
      nhood::make_problem(bad, f.query, f.key, f.value);
    } catch (const nhood::Error& e) {
      threw = e.kind() == nhood::ErrorKind::value && std::string(e.what()).find("kernel_size[0]") != std::string::npos;
    }
    check(threw, "kernel_size > length raises nhood::Error naming kernel_size");
  }
  {
    nhood::ForwardTensors wrong = f;
    wrong.out.dtype = DType::float32;
    bool threw = false;
    try {
      nhood::forward(problem, wrong, options);
    } catch (const nhood::Error& e) {
      threw = e.kind() == nhood::ErrorKind::type;
    }
    check(threw, "wrong out dtype raises a type error");
  }
  // Mismatched devices (checkable without a GPU: the views only claim a device,
  // and validation refuses them before any memory is touched).
  {
    const nhood::Device gpu{nhood::DeviceKind::cuda, 0};
    auto error_of = [](auto&& call) -> std::string {
      try {
        call();
      } catch (const nhood::Error& e) {
        return e.kind() == nhood::ErrorKind::value ? e.what() : "(not a value error)";
      }
      return "(no error)";
    };
    nhood::TensorView k_gpu = f.key;
    k_gpu.device = gpu;
    const std::string key_msg = error_of([&] { nhood::make_problem(w, f.query, k_gpu, f.value); });
    check(key_msg.find("key must be on the device of query (cpu)") != std::string::npos &&
              key_msg.find("cuda:0") != std::string::npos,
          "key on another device than query raises a value error naming key and both devices");

    std::vector<double> guard(q.size(), 7.25);
    nhood::ForwardTensors wrong = f;
    wrong.out = view(guard);
    wrong.out.device = gpu;
    const std::string out_msg = error_of([&] { nhood::forward(problem, wrong, options); });
    check(out_msg.find("out must be on cpu like query, got cuda:0") != std::string::npos,
          "out on another device raises a value error naming out");
    nhood::TensorView lse_gpu = lse_view;
    lse_gpu.device = gpu;
    nhood::ForwardTensors wrong_lse = f;
    wrong_lse.out = view(guard);
    wrong_lse.lse = &lse_gpu;
    const std::string lse_msg = error_of([&] { nhood::forward(problem, wrong_lse, options); });
    check(lse_msg.find("lse must be on cpu like query, got cuda:0") != std::string::npos,
          "lse on another device raises a value error naming lse");
    bool untouched = true;
    for (double x : guard) untouched = untouched && x == 7.25;
    check(untouched, "nothing written when devices mismatch");

    nhood::BackwardTensors bw_wrong{view(q), view(k), view(v), view(out), lse_view, view(dout), view(dq), view(dk),
                                    view(dv)};
    bw_wrong.d_key.device = gpu;
    const std::string bwd_msg = error_of([&] { nhood::backward(problem, bw_wrong, options); });
    check(bwd_msg.find("d_key must be on cpu like query, got cuda:0") != std::string::npos,
          "backward: d_key on another device raises a value error naming d_key");
  }
  if (failures == 0) std::printf("nhood C++ API test: all checks passed\n");
  return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
