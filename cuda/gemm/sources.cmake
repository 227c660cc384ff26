# Unfused QK/AV ops on CUDA: the gemm (tensor-core) kernels and the naive
# per-element kernels (cuda/naive/unfused_*.cu). Included by the top-level
# CMakeLists.txt when CUDA is on.
target_sources(nhood PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/backend.cpp
  ${CMAKE_CURRENT_LIST_DIR}/qk.cu
  ${CMAKE_CURRENT_LIST_DIR}/av.cu
  ${CMAKE_CURRENT_LIST_DIR}/../naive/unfused_qk.cu
  ${CMAKE_CURRENT_LIST_DIR}/../naive/unfused_av.cu
)
set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/backend.cpp PROPERTIES LANGUAGE CXX)
target_compile_definitions(nhood PRIVATE NHOOD_WITH_UNFUSED_CUDA)
