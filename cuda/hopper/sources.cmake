# hopper backend (wgmma, TMA, setmaxnreg): compiled only for sm_90a, in an
# object library of its own so the other families keep the configured list.
if("90a" IN_LIST NHOOD_CUDA_ARCHITECTURES)
  file(GLOB _nhood_hopper_inst CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/inst_*.cu)
  add_library(nhood_hopper OBJECT
    ${CMAKE_CURRENT_LIST_DIR}/backend.cu
    ${CMAKE_CURRENT_LIST_DIR}/tensor_maps.cu
    ${_nhood_hopper_inst})
  set_target_properties(nhood_hopper PROPERTIES CUDA_ARCHITECTURES 90a POSITION_INDEPENDENT_CODE ON)
  target_include_directories(nhood_hopper PRIVATE ${PROJECT_SOURCE_DIR}/include ${CUDAToolkit_INCLUDE_DIRS})
  target_compile_definitions(nhood_hopper PRIVATE NHOOD_WITH_CUDA)
  target_sources(nhood PRIVATE $<TARGET_OBJECTS:nhood_hopper>)
  target_compile_definitions(nhood PRIVATE NHOOD_WITH_HOPPER)
  message(STATUS "nhood: hopper backend ON (sm_90a)")
else()
  message(STATUS "nhood: hopper backend OFF (90a not in NHOOD_CUDA_ARCHITECTURES)")
endif()
