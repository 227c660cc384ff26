// The bodies of nhood's XLA FFI handlers, shared by the CPU and CUDA
// bindings (cpu_handlers.cpp, cuda_handlers.cpp), which only add how the
// device and stream are found.
//
// Calling convention (python/nhood/jax/_ffi.py builds these calls):
//   nhood_na_forward   args  query, key, value [, additional_keys, additional_values]
//                      rets  out [, lse]
//   nhood_na_backward  args  query, key, value, out, lse, d_out [, additional_keys, additional_values]
//                      rets  d_query, d_key, d_value [, d_additional_keys, d_additional_values]
//   attributes         rank (i32), kernel_size / stride / dilation / is_causal (i32[3]),
//                      has_scale (bool), scale (f64), backend (string) [, deterministic (bool)]
// Optional operands travel as "remaining" args/rets so one target serves
// every combination; their count decides what is present.
#pragma once

#include <exception>
#include <string>
#include <string_view>
#include <utility>

#include "decode.hpp"

namespace nhood_jax {

// nhood::Error -> an FFI error carrying the same message; XLA raises it in
// Python as an exception at execution time.
template <typename Body>
ffi::Error guarded(Body&& body) {
  try {
    body();
    return ffi::Error::Success();
  } catch (const nhood::Error& e) {
    const ffi::ErrorCode code =
        e.kind() == nhood::ErrorKind::runtime ? ffi::ErrorCode::kInternal : ffi::ErrorCode::kInvalidArgument;
    return ffi::Error(code, std::string("nhood: ") + e.what());
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("nhood: ") + e.what());
  }
}

// Additional keys/values come as a pair of remaining args (or none).
struct Additional {
  nhood::TensorView keys, values;
  bool present = false;
  Additional(const ffi::RemainingArgs& rest, nhood::Device device) {
    if (rest.size() == 0) return;
    if (rest.size() != 2)
      throw nhood::Error(nhood::ErrorKind::value, "additional_keys and additional_values must be given together");
    keys = to_view(rest.get<ffi::AnyBuffer>(0).value(), 3, device, "additional_keys");
    values = to_view(rest.get<ffi::AnyBuffer>(1).value(), 3, device, "additional_values");
    present = true;
  }
};

inline ffi::Error forward(nhood::Device device, void* stream, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                          ffi::RemainingArgs rest, ffi::Result<ffi::AnyBuffer> out, ffi::RemainingRets lse,
                          const Window& window, std::string_view backend) {
  return guarded([&] {
    const int core = window.rank + 2;  // spatial axes, heads, head dim
    nhood::ForwardTensors t;
    t.query = to_view(q, core, device, "query");
    t.key = to_view(k, core, device, "key");
    t.value = to_view(v, core, device, "value");
    t.out = to_view(*out, core, device, "out");
    nhood::TensorView lse_view;
    if (lse.size() > 0) {
      lse_view = to_view(*lse.get<ffi::AnyBuffer>(0).value(), window.rank + 1, device, "lse");
      t.lse = &lse_view;
    }
    const Additional add(rest, device);
    if (add.present) {
      t.additional_keys = &add.keys;
      t.additional_values = &add.values;
    }
    const nhood::Problem problem = nhood::make_problem(window_args(window), t.query, t.key, t.value,
                                                       t.additional_keys);
    nhood::forward(problem, t, options(backend, stream, false));
  });
}

inline ffi::Error backward(nhood::Device device, void* stream, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                           ffi::AnyBuffer out, ffi::AnyBuffer lse, ffi::AnyBuffer d_out, ffi::RemainingArgs rest,
                           ffi::Result<ffi::AnyBuffer> dq, ffi::Result<ffi::AnyBuffer> dk,
                           ffi::Result<ffi::AnyBuffer> dv, ffi::RemainingRets d_add, const Window& window,
                           std::string_view backend, bool deterministic) {
  return guarded([&] {
    const int core = window.rank + 2;
    nhood::BackwardTensors t;
    t.query = to_view(q, core, device, "query");
    t.key = to_view(k, core, device, "key");
    t.value = to_view(v, core, device, "value");
    t.out = to_view(out, core, device, "out");
    t.lse = to_view(lse, window.rank + 1, device, "lse");
    t.d_out = to_view(d_out, core, device, "d_out");
    t.d_query = to_view(*dq, core, device, "d_query");
    t.d_key = to_view(*dk, core, device, "d_key");
    t.d_value = to_view(*dv, core, device, "d_value");
    const Additional add(rest, device);
    nhood::TensorView d_add_k, d_add_v;
    if (add.present) {
      if (d_add.size() != 2)
        throw nhood::Error(nhood::ErrorKind::value, "backward with additional tokens must return their gradients");
      d_add_k = to_view(*d_add.get<ffi::AnyBuffer>(0).value(), 3, device, "d_additional_keys");
      d_add_v = to_view(*d_add.get<ffi::AnyBuffer>(1).value(), 3, device, "d_additional_values");
      t.additional_keys = &add.keys;
      t.additional_values = &add.values;
      t.d_additional_keys = &d_add_k;
      t.d_additional_values = &d_add_v;
    }
    const nhood::Problem problem = nhood::make_problem(window_args(window), t.query, t.key, t.value,
                                                       t.additional_keys);
    nhood::backward(problem, t, options(backend, stream, deterministic));
  });
}

// The argument part of both bindings, after any context a platform adds.
template <typename Binding>
auto bind_window(Binding binding) {
  return std::move(binding).template Attr<int32_t>("rank")
      .template Attr<ffi::Span<const int32_t>>("kernel_size")
      .template Attr<ffi::Span<const int32_t>>("stride")
      .template Attr<ffi::Span<const int32_t>>("dilation")
      .template Attr<ffi::Span<const int32_t>>("is_causal")
      .template Attr<bool>("has_scale")
      .template Attr<double>("scale")
      .template Attr<std::string_view>("backend");
}

template <typename Binding>
auto bind_forward(Binding binding) {
  return bind_window(std::move(binding).template Arg<ffi::AnyBuffer>()
                         .template Arg<ffi::AnyBuffer>()
                         .template Arg<ffi::AnyBuffer>()
                         .RemainingArgs()
                         .template Ret<ffi::AnyBuffer>()
                         .RemainingRets());
}

template <typename Binding>
auto bind_backward(Binding binding) {
  return bind_window(std::move(binding).template Arg<ffi::AnyBuffer>()  // query
                         .template Arg<ffi::AnyBuffer>()     // key
                         .template Arg<ffi::AnyBuffer>()     // value
                         .template Arg<ffi::AnyBuffer>()     // out
                         .template Arg<ffi::AnyBuffer>()     // lse
                         .template Arg<ffi::AnyBuffer>()     // d_out
                         .RemainingArgs()
                         .template Ret<ffi::AnyBuffer>()
                         .template Ret<ffi::AnyBuffer>()
                         .template Ret<ffi::AnyBuffer>()
                         .RemainingRets())
      .template Attr<bool>("deterministic");
}

}  // namespace nhood_jax
