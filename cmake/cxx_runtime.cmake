# nhood_link_shared_cxx_runtime(<target>): a Python extension module links the
# shared C++ runtime (libstdc++.so.6), never a private copy of libstdc++.a.
#
# Why: an extension that carries libstdc++.a exports that copy's symbols,
# among them the STB_GNU_UNIQUE ones (the locale facet ids such as
# std::num_put<char>::id). glibc binds unique symbols process-wide, RTLD_LOCAL
# or not, to the first definition loaded: the libstdc++.so.6 that numpy's
# OpenBLAS, torch or jaxlib brought in. The module's own static locale code
# then builds its locales with facet indices taken from that other copy; when
# the two libstdc++ versions differ (the GPU image: g++ 13's libstdc++.a in the
# module, GCC 14's libstdc++.so.6.0.33 in the process), `std::ostringstream <<
# integer` picks the wrong facet and segfaults, so every libnhood error message
# with a number in it (nhood::detail::fail) took the whole Python process down.
# A toolchain links libstdc++ statically when the driver's -lstdc++ finds
# libstdc++.a first: the GPU image's CXX=/opt/gcc/bin/g++ (a trimmed GCC 13.3,
# also without lto-wrapper) searches /opt/gcc/lib/gcc/x86_64-linux-gnu/13, which
# holds libstdc++.a but no libstdc++.so; or when the flags carry -static-libstdc++.
#
# What this does, on Linux with libstdc++ only: links the runtime the compiler
# would load (`$CXX -print-file-name=libstdc++.so.6`) by its full path, after
# the module's own libraries, so every C++ runtime symbol resolves to it; the
# driver's -lstdc++ at the end then has nothing left to add. Anything an
# older system runtime lacks and libstdc++.a still supplies is kept private
# (--exclude-libs), never exported. tests/test_cxx_runtime.py checks the result.
include_guard(GLOBAL)
include(CheckCXXSourceCompiles)

function(nhood_link_shared_cxx_runtime target)
  if(NOT CMAKE_SYSTEM_NAME STREQUAL "Linux" OR NOT CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    return()
  endif()
  if(NOT DEFINED NHOOD_CXX_RUNTIME)
    check_cxx_source_compiles("#include <cstddef>\n#ifndef __GLIBCXX__\n#error not libstdc++\n#endif\nint main() { return 0; }"
                              NHOOD_USES_LIBSTDCXX)
    set(_runtime "")
    if(NHOOD_USES_LIBSTDCXX)
      execute_process(COMMAND ${CMAKE_CXX_COMPILER} -print-file-name=libstdc++.so.6
                      OUTPUT_VARIABLE _runtime OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc ERROR_QUIET)
      if(NOT _rc EQUAL 0 OR NOT IS_ABSOLUTE "${_runtime}" OR NOT EXISTS "${_runtime}")
        set(_runtime "")
      endif()
    endif()
    set(NHOOD_CXX_RUNTIME "${_runtime}" CACHE FILEPATH
        "Shared C++ runtime the Python extension modules link (empty: the toolchain's default)")
    if(NHOOD_USES_LIBSTDCXX AND NOT _runtime)
      message(WARNING "nhood: no libstdc++.so.6 found next to ${CMAKE_CXX_COMPILER}; if the toolchain links "
                      "libstdc++.a into the extension modules, its symbols are kept private (--exclude-libs)")
    endif()
  endif()
  if(NHOOD_CXX_RUNTIME)
    target_link_libraries(${target} PRIVATE "${NHOOD_CXX_RUNTIME}")
  endif()
  target_link_options(${target} PRIVATE "LINKER:--exclude-libs,libstdc++.a")
endfunction()
