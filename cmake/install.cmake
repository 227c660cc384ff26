# Install rules of libnhood: headers, the library and a relocatable CMake
# package (nhoodConfig.cmake, nhoodConfigVersion.cmake, nhoodTargets.cmake),
# so a C++ engine does find_package(nhood) and links nhood::nhood.
#
# A plain `cmake --install` lays them out under the prefix (include/, lib/,
# lib/cmake/nhood/). The wheel built by scikit-build-core carries the same
# tree inside the Python package (site-packages/nhood/...), which is where
# nhood.cmake_dir() points.
include(CMakePackageConfigHelpers)

install(TARGETS nhood EXPORT nhoodTargets
  ARCHIVE DESTINATION ${NHOOD_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${NHOOD_INSTALL_LIBDIR})
install(DIRECTORY include/nhood DESTINATION ${NHOOD_INSTALL_INCLUDEDIR})
install(EXPORT nhoodTargets NAMESPACE nhood:: DESTINATION ${NHOOD_INSTALL_CMAKEDIR})

configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/nhoodConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/nhoodConfig.cmake INSTALL_DESTINATION ${NHOOD_INSTALL_CMAKEDIR})
# 0.x: minor versions may break the API, so only the same minor version matches.
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/nhoodConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/nhoodConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/nhoodConfigVersion.cmake
  DESTINATION ${NHOOD_INSTALL_CMAKEDIR})
