// XLA FFI handlers for arrays on the host. XLA's CPU runtime calls them on
// one of its threads; libnhood's CPU backends parallelize inside the call.
#include "handlers.hpp"
#include "handlers_export.hpp"

namespace nhood_jax {
namespace {

constexpr nhood::Device kHost{nhood::DeviceKind::cpu, 0};

ffi::Error forward_cpu(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::RemainingArgs rest,
                       ffi::Result<ffi::AnyBuffer> out, ffi::RemainingRets lse, int32_t rank,
                       ffi::Span<const int32_t> kernel, ffi::Span<const int32_t> stride,
                       ffi::Span<const int32_t> dilation, ffi::Span<const int32_t> causal, bool has_scale,
                       double scale, std::string_view backend) {
  return forward(kHost, nullptr, q, k, v, rest, out, lse,
                 Window{rank, kernel, stride, dilation, causal, has_scale, scale}, backend);
}

ffi::Error backward_cpu(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::AnyBuffer out, ffi::AnyBuffer lse,
                        ffi::AnyBuffer d_out, ffi::RemainingArgs rest, ffi::Result<ffi::AnyBuffer> dq,
                        ffi::Result<ffi::AnyBuffer> dk, ffi::Result<ffi::AnyBuffer> dv, ffi::RemainingRets d_add,
                        int32_t rank, ffi::Span<const int32_t> kernel, ffi::Span<const int32_t> stride,
                        ffi::Span<const int32_t> dilation, ffi::Span<const int32_t> causal, bool has_scale,
                        double scale, std::string_view backend, bool deterministic) {
  return backward(kHost, nullptr, q, k, v, out, lse, d_out, rest, dq, dk, dv, d_add,
                  Window{rank, kernel, stride, dilation, causal, has_scale, scale}, backend, deterministic);
}

}  // namespace
}  // namespace nhood_jax

XLA_FFI_DEFINE_HANDLER_SYMBOL(nhood_jax_na_forward_cpu, nhood_jax::forward_cpu, nhood_jax::bind_forward(xla::ffi::Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(nhood_jax_na_backward_cpu, nhood_jax::backward_cpu, nhood_jax::bind_backward(xla::ffi::Ffi::Bind()));
