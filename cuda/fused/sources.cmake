# fused backend: flash-style NA on tensor cores (mma.sync, sm_80+).
file(GLOB _nhood_fused_inst CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/inst_*.cu)
target_sources(nhood PRIVATE ${CMAKE_CURRENT_LIST_DIR}/backend.cu ${_nhood_fused_inst})
