# hopper backend (wgmma, TMA, setmaxnreg): compiled only for sm_90a, in an
# object library of its own so the other families keep the configured list.
# Enabled by a 90a entry in any of CMake's spellings (90a, 90a-real,
# 90a-virtual), built with that entry.
set(_nhood_hopper_arch "")
foreach(_arch IN LISTS NHOOD_CUDA_ARCHITECTURES)
  if(_arch MATCHES "^90a(-real|-virtual)?$")
    set(_nhood_hopper_arch "${_arch}")
  endif()
endforeach()
if(_nhood_hopper_arch)
  file(GLOB _nhood_hopper_inst CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/inst_*.cu)
  add_library(nhood_hopper OBJECT
    ${CMAKE_CURRENT_LIST_DIR}/backend.cu
    ${CMAKE_CURRENT_LIST_DIR}/tensor_maps.cu
    ${CMAKE_CURRENT_LIST_DIR}/inverse_windows.cu
    ${_nhood_hopper_inst})
  set_target_properties(nhood_hopper PROPERTIES CUDA_ARCHITECTURES ${_nhood_hopper_arch} POSITION_INDEPENDENT_CODE ON)
  target_include_directories(nhood_hopper PRIVATE ${PROJECT_SOURCE_DIR}/include ${CUDAToolkit_INCLUDE_DIRS})
  target_compile_definitions(nhood_hopper PRIVATE NHOOD_WITH_CUDA)
  target_sources(nhood PRIVATE $<TARGET_OBJECTS:nhood_hopper>)
  target_compile_definitions(nhood PRIVATE NHOOD_WITH_HOPPER)
  message(STATUS "nhood: hopper backend ON (${_nhood_hopper_arch})")
else()
  message(STATUS "nhood: hopper backend OFF (90a not in NHOOD_CUDA_ARCHITECTURES)")
endif()
