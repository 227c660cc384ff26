# nhood._jax_ffi: XLA FFI handlers for nhood.jax (optional).
#
# The handlers compile against XLA's FFI headers, which ship inside jaxlib
# (jax.ffi.include_dir()). nhood must build without any framework, so the
# module is built only when those headers are found:
#   1. -DNHOOD_XLA_FFI_INCLUDE_DIR=... (or the environment variable of that name);
#   2. the build's Python interpreter, if it can import jax;
#   3. the same interpreter started with -I: under pip's build isolation the
#      build interpreter hides the user's site-packages, -I ignores the
#      PYTHONPATH that isolation relies on and so sees the environment nhood
#      is being installed into.
# The FFI is a versioned C ABI, so a module built against one jaxlib's
# headers runs with that jaxlib and newer ones. Nothing from XLA is vendored.
# Included from CMakeLists.txt inside `if(SKBUILD)` after nanobind is found.

set(_nhood_xla_source "NHOOD_XLA_FFI_INCLUDE_DIR")
if(NOT NHOOD_XLA_FFI_INCLUDE_DIR AND DEFINED ENV{NHOOD_XLA_FFI_INCLUDE_DIR})
  set(NHOOD_XLA_FFI_INCLUDE_DIR "$ENV{NHOOD_XLA_FFI_INCLUDE_DIR}")
endif()
if(NOT NHOOD_XLA_FFI_INCLUDE_DIR)
  foreach(_nhood_py_flags "" "-I")
    execute_process(
      COMMAND "${Python_EXECUTABLE}" ${_nhood_py_flags} -c "import jax.ffi; print(jax.ffi.include_dir())"
      OUTPUT_VARIABLE _nhood_xla_dir OUTPUT_STRIP_TRAILING_WHITESPACE
      RESULT_VARIABLE _nhood_xla_rc ERROR_QUIET)
    if(_nhood_xla_rc EQUAL 0 AND EXISTS "${_nhood_xla_dir}/xla/ffi/api/ffi.h")
      set(NHOOD_XLA_FFI_INCLUDE_DIR "${_nhood_xla_dir}")
      set(_nhood_xla_source "import jax.ffi in ${Python_EXECUTABLE} ${_nhood_py_flags}")
      break()
    endif()
  endforeach()
endif()
set(NHOOD_XLA_FFI_INCLUDE_DIR "${NHOOD_XLA_FFI_INCLUDE_DIR}" CACHE PATH
    "Directory holding xla/ffi/api/ffi.h (jax.ffi.include_dir()); empty: look for jax")

if(NHOOD_XLA_FFI_INCLUDE_DIR AND EXISTS "${NHOOD_XLA_FFI_INCLUDE_DIR}/xla/ffi/api/ffi.h")
  message(STATUS "nhood: JAX FFI handlers ON (XLA FFI headers: ${NHOOD_XLA_FFI_INCLUDE_DIR}, from ${_nhood_xla_source})")
  set(_nhood_jax_sources bindings/jax/module.cpp bindings/jax/cpu_handlers.cpp)
  if(NHOOD_WITH_CUDA)
    list(APPEND _nhood_jax_sources bindings/jax/cuda_handlers.cpp)
  endif()
  nanobind_add_module(_jax_ffi STABLE_ABI NB_STATIC ${NHOOD_NB_LTO} ${_nhood_jax_sources})  # NHOOD_NB_LTO: CMakeLists.txt
  # SYSTEM: XLA's headers are not ours to warn about.
  target_include_directories(_jax_ffi SYSTEM PRIVATE "${NHOOD_XLA_FFI_INCLUDE_DIR}")
  target_link_libraries(_jax_ffi PRIVATE nhood)
  nhood_link_shared_cxx_runtime(_jax_ffi)  # cmake/cxx_runtime.cmake
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(_jax_ffi PRIVATE -Wall -Wextra)
  endif()
  if(NHOOD_WITH_CUDA)
    target_link_libraries(_jax_ffi PRIVATE CUDA::cudart_static)
  endif()
  install(TARGETS _jax_ffi LIBRARY DESTINATION nhood)
else()
  message(STATUS "nhood: JAX FFI handlers OFF (no XLA FFI headers: install jax before building nhood, "
                 "or set NHOOD_XLA_FFI_INCLUDE_DIR); nhood.jax will be unavailable")
endif()
