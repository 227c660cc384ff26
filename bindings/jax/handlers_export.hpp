// The handler symbols that module.cpp wraps in PyCapsules. Declared here so
// the CPU and CUDA translation units can be compiled (or left out) apart.
#pragma once

#include "xla/ffi/api/api.h"

XLA_FFI_DECLARE_HANDLER_SYMBOL(nhood_jax_na_forward_cpu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(nhood_jax_na_backward_cpu);
#ifdef NHOOD_WITH_CUDA
XLA_FFI_DECLARE_HANDLER_SYMBOL(nhood_jax_na_forward_cuda);
XLA_FFI_DECLARE_HANDLER_SYMBOL(nhood_jax_na_backward_cuda);
#endif
