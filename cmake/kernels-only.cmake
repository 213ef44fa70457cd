# SL_KERNELS_ONLY=ON: the compute core (model description, kernels, forward
# pass, in-process engine) and the tests that check it against the reference
# data, without the tokenizers (PCRE2), the CLI or anything that talks to a
# socket. This is what the aarch64 cross build (cmake/aarch64-linux-gnu.cmake)
# builds and ctest runs under qemu-user: it needs the cross compiler and, for
# the JSON reference files, libcjson for the target (libcjson-dev:arm64).
# Included from the top-level CMakeLists.txt, which stops after it.

add_library(slcore STATIC
  common/log.c
  model/dtype.c
  model/gguf.c
  model/model.c
  compute/quant.c
  compute/lowbit.c
  compute/requant.c
  compute/kernels.c
  compute/vec.c
  compute/pool.c
  compute/matmul.c
  compute/forward.c
  compute/moe.c
  compute/engine.c
)
# The kernel variants, as the full build has them (CMakeLists.txt).
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64)$")
  target_sources(slcore PRIVATE compute/kernels_neon.c compute/lowbit_neon.c)
endif()
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  target_sources(slcore PRIVATE compute/kernels_avx2.c compute/kernels_avx512.c compute/lowbit_avx2.c
    compute/lowbit_avx512.c)
  set_source_files_properties(compute/kernels_avx2.c compute/lowbit_avx2.c PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
  set_source_files_properties(compute/kernels_avx512.c compute/lowbit_avx512.c PROPERTIES COMPILE_OPTIONS
    "-mavx512f;-mavx512bw;-mavx512dq;-mavx512vl;-mavx512vnni;-mavx2;-mfma;-mf16c")
endif()
target_include_directories(slcore PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(slcore PUBLIC Threads::Threads m)

find_package(PkgConfig REQUIRED)
pkg_check_modules(CJSON IMPORTED_TARGET libcjson)
if(NOT CJSON_FOUND)
  message(FATAL_ERROR "SL_KERNELS_ONLY: libcjson for the target was not found "
          "(cross build: dpkg --add-architecture arm64; apt-get install libcjson-dev:arm64)")
endif()
set(SL_TESTDATA_DIR "${CMAKE_SOURCE_DIR}/../shared/testdata")
add_library(sltestutil STATIC tests/testutil.c)
target_link_libraries(sltestutil PUBLIC slcore PkgConfig::CJSON)
target_compile_definitions(sltestutil PUBLIC SL_TESTDATA_DIR="${SL_TESTDATA_DIR}")

enable_testing()
# Under a cross build ctest prefixes each command with
# CMAKE_CROSSCOMPILING_EMULATOR (qemu-user).
function(sl_kernels_test name src)
  add_executable(${name} tests/${src})
  target_link_libraries(${name} PRIVATE sltestutil)
  # Debian 12's aarch64 gcc 12 crashes (internal compiler error in
  # vect_transform_reduction) vectorizing the tests' fmax reductions of
  # worst errors; the tests need no vectorizing.
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64)$" AND CMAKE_C_COMPILER_VERSION VERSION_LESS 13)
    target_compile_options(${name} PRIVATE -fno-tree-vectorize)
  endif()
  add_test(NAME ${name} COMMAND ${name} ${ARGN})
endfunction()

sl_kernels_test(test_kernels test_kernels.c)
sl_kernels_test(test_lowbit test_lowbit.c)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64)$")
  sl_kernels_test(test_kernels_neon test_kernels_neon.c)
  set_tests_properties(test_kernels test_lowbit PROPERTIES ENVIRONMENT SL_CPU=neon)
  if(CMAKE_CROSSCOMPILING)
    # Both instruction sets of the integer tiles: qemu's default CPU ("max")
    # has the dot-product extension, a Cortex-A57 (Armv8.0) has not; each
    # run also checks that the run-time probe saw which one it was.
    set_tests_properties(test_kernels_neon PROPERTIES ENVIRONMENT "QEMU_CPU=max;SL_TEST_EXPECT_DOTPROD=1")
    add_test(NAME test_kernels_neon_nodot COMMAND test_kernels_neon)
    set_tests_properties(test_kernels_neon_nodot PROPERTIES ENVIRONMENT
                         "QEMU_CPU=cortex-a57;SL_TEST_EXPECT_DOTPROD=0")
    add_test(NAME test_kernels_nodot COMMAND test_kernels)
    set_tests_properties(test_kernels_nodot PROPERTIES ENVIRONMENT "SL_CPU=neon;QEMU_CPU=cortex-a57")
    add_test(NAME test_lowbit_nodot COMMAND test_lowbit)
    set_tests_properties(test_lowbit_nodot PROPERTIES ENVIRONMENT "SL_CPU=neon;QEMU_CPU=cortex-a57")
  endif()
endif()
sl_kernels_test(test_quant test_quant.c)
sl_kernels_test(test_forward test_forward.c)
# The reference-data checks with the native kernels (SL_CPU names no
# variant off aarch64, so only set it there).
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64)$")
  set_tests_properties(test_quant test_forward PROPERTIES ENVIRONMENT SL_CPU=neon)
endif()
