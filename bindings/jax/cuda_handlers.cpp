// XLA FFI handlers for arrays on a CUDA device. The stream and the device
// come from XLA's call frame, so kernels are ordered with the rest of the
// XLA program and nothing synchronizes or copies through the host.
#include <cuda_runtime_api.h>

#include "handlers.hpp"
#include "handlers_export.hpp"

namespace nhood_jax {
namespace {

nhood::Device cuda_device(int32_t ordinal) { return {nhood::DeviceKind::cuda, ordinal}; }

ffi::Error forward_cuda(cudaStream_t stream, int32_t ordinal, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                        ffi::RemainingArgs rest, ffi::Result<ffi::AnyBuffer> out, ffi::RemainingRets lse,
                        int32_t rank, ffi::Span<const int32_t> kernel, ffi::Span<const int32_t> stride,
                        ffi::Span<const int32_t> dilation, ffi::Span<const int32_t> causal, bool has_scale,
                        double scale, std::string_view backend) {
  return forward(cuda_device(ordinal), stream, q, k, v, rest, out, lse,
                 Window{rank, kernel, stride, dilation, causal, has_scale, scale}, backend);
}

ffi::Error backward_cuda(cudaStream_t stream, int32_t ordinal, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                         ffi::AnyBuffer out, ffi::AnyBuffer lse, ffi::AnyBuffer d_out, ffi::RemainingArgs rest,
                         ffi::Result<ffi::AnyBuffer> dq, ffi::Result<ffi::AnyBuffer> dk,
                         ffi::Result<ffi::AnyBuffer> dv, ffi::RemainingRets d_add, int32_t rank,
                         ffi::Span<const int32_t> kernel, ffi::Span<const int32_t> stride,
                         ffi::Span<const int32_t> dilation, ffi::Span<const int32_t> causal, bool has_scale,
                         double scale, std::string_view backend, bool deterministic) {
  return backward(cuda_device(ordinal), stream, q, k, v, out, lse, d_out, rest, dq, dk, dv, d_add,
                  Window{rank, kernel, stride, dilation, causal, has_scale, scale}, backend, deterministic);
}

template <typename Binding>
auto cuda_context(Binding binding) {
  return std::move(binding).template Ctx<ffi::PlatformStream<cudaStream_t>>().template Ctx<ffi::DeviceOrdinal>();
}

}  // namespace
}  // namespace nhood_jax

XLA_FFI_DEFINE_HANDLER_SYMBOL(nhood_jax_na_forward_cuda, nhood_jax::forward_cuda, nhood_jax::bind_forward(nhood_jax::cuda_context(xla::ffi::Ffi::Bind())));
XLA_FFI_DEFINE_HANDLER_SYMBOL(nhood_jax_na_backward_cuda, nhood_jax::backward_cuda, nhood_jax::bind_backward(nhood_jax::cuda_context(xla::ffi::Ffi::Bind())));
