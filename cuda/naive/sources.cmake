# naive CUDA backend (included by the top-level CMakeLists.txt when CUDA is on).
target_sources(nhood PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/backend.cpp
  ${CMAKE_CURRENT_LIST_DIR}/forward.cu
  ${CMAKE_CURRENT_LIST_DIR}/backward.cu
)
