// Rows of the unfused dispatch table on CUDA.
//   gemm:  tensor-core forward kernels (qk.cu, av.cu) for fp16/bf16 with
//          head_dim % 16 == 0 and <= 128; every other problem (fp32/fp64,
//          other head dims) and both backward passes run the naive kernels,
//          so `gemm` supports everything `naive` does.
//   naive: per-element kernels (cuda/naive/unfused_*.cu), all dtypes/features.
#include <string>

#include "../../src/unfused/backend.hpp"
#include "unfused.hpp"

namespace nhood::cuda::unfused {

bool gemm_supports(const detail::Params& p) {
  return (p.dtype == DType::float16 || p.dtype == DType::bfloat16) && p.head_dim % 16 == 0 && p.head_dim <= 128;
}

namespace {
std::string everything(const detail::Params&, bool) { return {}; }

void gemm_or_naive_qk(const detail::QKParams& p, void* stream) {
  if (gemm_supports(p.shape)) gemm_qk_forward(p, stream); else naive_qk_forward(p, stream);
}
void gemm_or_naive_av(const detail::AVParams& p, void* stream) {
  if (gemm_supports(p.shape)) gemm_av_forward(p, stream); else naive_av_forward(p, stream);
}
}  // namespace

}  // namespace nhood::cuda::unfused

namespace nhood::detail {

UnfusedBackendEntry unfused_gemm_backend() {
  namespace u = cuda::unfused;
  return {Backend::gemm, DeviceKind::cuda, u::everything, u::gemm_or_naive_qk, u::naive_qk_backward,
          u::gemm_or_naive_av, u::naive_av_backward};
}

UnfusedBackendEntry unfused_naive_backend() {
  namespace u = cuda::unfused;
  return {Backend::naive, DeviceKind::cuda, u::everything, u::naive_qk_forward, u::naive_qk_backward,
          u::naive_av_forward, u::naive_av_backward};
}

}  // namespace nhood::detail
