# Unfused QK/AV ops: validation, dispatch and the CPU reference backend.
target_sources(nhood PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/problem.cpp
  ${CMAKE_CURRENT_LIST_DIR}/params.cpp
  ${CMAKE_CURRENT_LIST_DIR}/dispatch.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../cpu/unfused_reference.cpp
)
