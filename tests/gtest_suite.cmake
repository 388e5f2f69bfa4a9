# aclora_add_gtest_suite(<name> SOURCES <files...> LIBRARIES <targets...>
#                        [DEFINITIONS <definitions...>] [TEST_PREFIX <prefix>])
#
# Adds the GoogleTest executable <name>, registered with ctest (discovered at test
# time, test names prefixed by TEST_PREFIX), and, with GCC or Clang, a twin <name>_asan
# built with AddressSanitizer and UndefinedBehaviorSanitizer whose tests carry the ctest
# label "sanitize" and the prefix "asan." + TEST_PREFIX (run them alone with
# `ctest -L sanitize`). Test files include headers of tests/common.
include_guard(GLOBAL)

option(ACLORA_SANITIZED_TESTS "Also build the *_asan test executables (GCC/Clang)" ON)

function(aclora_add_gtest_suite name)
  cmake_parse_arguments(PARSE_ARGV 1 suite "" "TEST_PREFIX" "SOURCES;LIBRARIES;DEFINITIONS")
  add_executable(${name} ${suite_SOURCES})
  target_link_libraries(${name} PRIVATE ${suite_LIBRARIES} GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE ${suite_DEFINITIONS})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests/common)
  gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST TEST_PREFIX "${suite_TEST_PREFIX}")

  if(NOT ACLORA_SANITIZED_TESTS OR NOT CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    return()
  endif()
  set(sanitizers -fsanitize=address,undefined -fno-sanitize-recover=all)
  add_executable(${name}_asan ${suite_SOURCES})
  target_link_libraries(${name}_asan PRIVATE ${suite_LIBRARIES} GTest::gtest_main)
  target_compile_definitions(${name}_asan PRIVATE ${suite_DEFINITIONS})
  target_include_directories(${name}_asan PRIVATE ${PROJECT_SOURCE_DIR}/tests/common)
  # -O1 after the build type's flags: sanitized Eigen code at -O3 takes many times longer
  # to compile, and the twins exist to find memory errors, not to be fast.
  target_compile_options(${name}_asan PRIVATE ${sanitizers} -fno-omit-frame-pointer -O1)
  target_link_options(${name}_asan PRIVATE ${sanitizers})
  gtest_discover_tests(${name}_asan DISCOVERY_MODE PRE_TEST
                       TEST_PREFIX "asan.${suite_TEST_PREFIX}"
                       PROPERTIES LABELS sanitize ENVIRONMENT "UBSAN_OPTIONS=print_stacktrace=1")
endfunction()
