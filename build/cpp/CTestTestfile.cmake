# CMake generated Testfile for 
# Source directory: /work/main
# Build directory: /work/main/build/cpp
# 
# This file includes the relevant testing commands required for 
# testing this directory and lists subdirectories to be tested as well.
add_test("nhood_api_test" "/work/main/build/cpp/nhood_api_test")
set_tests_properties("nhood_api_test" PROPERTIES  _BACKTRACE_TRIPLES "/work/main/CMakeLists.txt;87;add_test;/work/main/CMakeLists.txt;0;")
