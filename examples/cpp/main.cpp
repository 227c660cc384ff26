// Embedding nhood in a C++ program: allocate raw buffers, describe them with
// TensorViews, run nhood::forward and nhood::backward, and check the results
// against a brute-force computation written from the window rule (DESIGN.md
// section 1). Runs on the GPU when nhood was built with CUDA and one is
// present, else on the CPU. Exits non-zero on any mismatch or error.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include <nhood/nhood.hpp>

#ifdef NHOOD_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace {

// ---- problem: 2-D, GQA (4 query heads over 2 kv heads), dilation on one axis ----
constexpr int64_t B = 2, X = 9, Y = 7, H = 4, HKV = 2, D = 8;
constexpr int32_t KX = 3, KY = 5, DIL_X = 2, DIL_Y = 1;
constexpr int64_t N = X * Y;

// Does query i attend key j along one axis (non-causal, stride 1)?
bool attends(int64_t i, int64_t j, int64_t length, int64_t kernel, int64_t dilation) {
  if (i % dilation != j % dilation) return false;
  const int64_t group_len = (length - i % dilation + dilation - 1) / dilation;
  const int64_t p = i / dilation, left = kernel / 2, right = kernel - 1 - left;
  int64_t start = std::max<int64_t>(p - left, 0);
  if (p + right >= group_len) start += group_len - right - p - 1;
  const int64_t q = j / dilation;
  return q >= start && q < start + kernel;
}

// Element index of [b, token, head, d] in a contiguous [B, X, Y, heads, D] buffer.
int64_t at(int64_t b, int64_t n, int64_t h, int64_t heads, int64_t d) { return ((b * N + n) * heads + h) * D + d; }

struct Reference {
  std::vector<double> out, dq, dk, dv;
};

// Dense softmax attention over the neighborhood mask, forward and backward, in double.
Reference brute_force(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                      const std::vector<float>& dout, double scale) {
  Reference r{std::vector<double>(q.size()), std::vector<double>(q.size()), std::vector<double>(k.size()),
              std::vector<double>(v.size())};
  std::vector<double> p(N), dp(N);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t hk = h / (H / HKV);
      for (int64_t i = 0; i < N; ++i) {
        double top = -INFINITY;
        for (int64_t j = 0; j < N; ++j) {
          const bool in = attends(i / Y, j / Y, X, KX, DIL_X) && attends(i % Y, j % Y, Y, KY, DIL_Y);
          double s = -INFINITY;
          if (in) {
            s = 0;
            for (int64_t d = 0; d < D; ++d) s += double(q[at(b, i, h, H, d)]) * k[at(b, j, hk, HKV, d)];
            s *= scale;
          }
          p[j] = s;
          top = std::max(top, s);
        }
        double total = 0;
        for (int64_t j = 0; j < N; ++j) total += p[j] = std::exp(p[j] - top);
        double delta = 0;
        for (int64_t j = 0; j < N; ++j) {
          p[j] /= total;
          dp[j] = 0;
          for (int64_t d = 0; d < D; ++d) {
            r.out[at(b, i, h, H, d)] += p[j] * v[at(b, j, hk, HKV, d)];
            dp[j] += double(dout[at(b, i, h, H, d)]) * v[at(b, j, hk, HKV, d)];
          }
          delta += p[j] * dp[j];
        }
        for (int64_t j = 0; j < N; ++j) {
          const double ds = p[j] * (dp[j] - delta) * scale;
          for (int64_t d = 0; d < D; ++d) {
            r.dq[at(b, i, h, H, d)] += ds * k[at(b, j, hk, HKV, d)];
            r.dk[at(b, j, hk, HKV, d)] += ds * q[at(b, i, h, H, d)];
            r.dv[at(b, j, hk, HKV, d)] += p[j] * dout[at(b, i, h, H, d)];
          }
        }
      }
    }
  return r;
}

// A float32 buffer on the CPU (malloc) or the GPU (cudaMalloc), with a host mirror.
struct Buffer {
  std::vector<float> host;
  void* data = nullptr;
  bool on_gpu = false;

  Buffer(size_t n, bool gpu) : host(n, 0.0f), on_gpu(gpu) {
#ifdef NHOOD_WITH_CUDA
    if (gpu) {
      check_cuda(cudaMalloc(&data, n * sizeof(float)), "cudaMalloc");
      return;
    }
#endif
    data = std::malloc(n * sizeof(float));
    if (data == nullptr) fail("malloc failed");
  }
  ~Buffer() {
#ifdef NHOOD_WITH_CUDA
    if (on_gpu) {
      cudaFree(data);
      return;
    }
#endif
    std::free(data);
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void upload() { copy(data, host.data()); }
  void download() { copy(host.data(), data); }

  void copy(void* dst, const void* src) {
#ifdef NHOOD_WITH_CUDA
    if (on_gpu) {
      check_cuda(cudaMemcpy(dst, src, host.size() * sizeof(float), cudaMemcpyDefault), "cudaMemcpy");
      return;
    }
#endif
    std::memcpy(dst, src, host.size() * sizeof(float));
  }
  static void fail(const char* what) {
    std::fprintf(stderr, "error: %s\n", what);
    std::exit(2);
  }
#ifdef NHOOD_WITH_CUDA
  static void check_cuda(cudaError_t e, const char* what) {
    if (e != cudaSuccess) {
      std::fprintf(stderr, "error: %s: %s\n", what, cudaGetErrorString(e));
      std::exit(2);
    }
  }
#endif
};

double max_error(const std::vector<float>& got, const std::vector<double>& want) {
  double err = 0;
  for (size_t i = 0; i < got.size(); ++i) err = std::max(err, std::abs(double(got[i]) - want[i]));
  return err;
}

int run() {
  const bool gpu = nhood::cuda_available();
  const nhood::Device device{gpu ? nhood::DeviceKind::cuda : nhood::DeviceKind::cpu, 0};
  std::printf("nhood example on %s\n", gpu ? "cuda:0" : "cpu");

  const size_t nq = B * N * H * D, nkv = B * N * HKV * D;
  Buffer q(nq, gpu), k(nkv, gpu), v(nkv, gpu), out(nq, gpu), lse(B * N * H, gpu), dout(nq, gpu);
  Buffer dq(nq, gpu), dk(nkv, gpu), dv(nkv, gpu);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  for (Buffer* buf : {&q, &k, &v, &dout}) {
    for (float& x : buf->host) x = normal(rng);
    buf->upload();
  }

  // Shapes are [batch, X, Y, heads, dim]; contiguous_view fills row-major strides.
  const int64_t q_shape[5] = {B, X, Y, H, D}, kv_shape[5] = {B, X, Y, HKV, D}, lse_shape[4] = {B, X, Y, H};
  auto view = [&](Buffer& b, const int64_t* shape, int32_t ndim = 5) {
    return nhood::contiguous_view(b.data, nhood::DType::float32, device, ndim, shape);
  };
  const nhood::TensorView lse_view = view(lse, lse_shape, 4);

  nhood::WindowArgs window;
  window.rank = 2;
  window.kernel_size[0] = KX;
  window.kernel_size[1] = KY;
  window.dilation[0] = DIL_X;
  window.dilation[1] = DIL_Y;

  nhood::ForwardTensors fwd{view(q, q_shape), view(k, kv_shape), view(v, kv_shape), view(out, q_shape), &lse_view};
  const nhood::Problem problem = nhood::make_problem(window, fwd.query, fwd.key, fwd.value);
  nhood::forward(problem, fwd);  // Backend::automatic, default stream

  nhood::BackwardTensors bwd{fwd.query,          fwd.key,           fwd.value,        fwd.out,
                             lse_view,           view(dout, q_shape), view(dq, q_shape), view(dk, kv_shape),
                             view(dv, kv_shape)};
  nhood::backward(problem, bwd);
#ifdef NHOOD_WITH_CUDA
  if (gpu) Buffer::check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");  // calls never synchronize
#endif
  for (Buffer* buf : {&out, &dq, &dk, &dv}) buf->download();

  const Reference ref = brute_force(q.host, k.host, v.host, dout.host, problem.scale);
  const double tol = 1e-4;
  const struct {
    const char* name;
    double err;
  } checks[] = {{"out", max_error(out.host, ref.out)},
                {"d_query", max_error(dq.host, ref.dq)},
                {"d_key", max_error(dk.host, ref.dk)},
                {"d_value", max_error(dv.host, ref.dv)}};
  int failures = 0;
  for (const auto& c : checks) {
    const bool ok = c.err <= tol;
    failures += !ok;
    std::printf("%-8s max |error| %.2e  %s\n", c.name, c.err, ok ? "ok" : "MISMATCH");
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main() {
  try {
    return run();
  } catch (const nhood::Error& e) {
    std::fprintf(stderr, "nhood error: %s\n", e.what());
    return 2;
  }
}
