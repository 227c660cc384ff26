// nhood._jax_ffi: hands nhood's XLA FFI handlers to JAX as PyCapsules.
//
// Nothing here runs per call: python/nhood/jax registers each capsule once
// with jax.ffi.register_ffi_target, after which XLA calls the handlers
// directly from compiled programs, without Python or a GIL in the loop.
#include <nanobind/nanobind.h>

#include "handlers_export.hpp"

namespace nb = nanobind;

namespace {

// jax.ffi.register_ffi_target accepts an unnamed capsule over the handler.
nb::capsule handler_capsule(XLA_FFI_Handler* handler) { return nb::capsule(reinterpret_cast<void*>(handler)); }

}  // namespace

NB_MODULE(_jax_ffi, m) {
  m.doc() = "XLA FFI handlers of nhood, as capsules for jax.ffi.register_ffi_target";
  // {platform: {target name: capsule}}; platform names are those of
  // jax.ffi.register_ffi_target ("cpu", "CUDA").
  nb::dict targets;
  nb::dict cpu;
  cpu["nhood_na_forward"] = handler_capsule(nhood_jax_na_forward_cpu);
  cpu["nhood_na_backward"] = handler_capsule(nhood_jax_na_backward_cpu);
  targets["cpu"] = cpu;
#ifdef NHOOD_WITH_CUDA
  nb::dict cuda;
  cuda["nhood_na_forward"] = handler_capsule(nhood_jax_na_forward_cuda);
  cuda["nhood_na_backward"] = handler_capsule(nhood_jax_na_backward_cuda);
  targets["CUDA"] = cuda;
#endif
  m.attr("targets") = targets;
}
