# CMake toolchain file: cross-build sluice for 64-bit Arm Linux with Debian's
# cross compiler (gcc-aarch64-linux-gnu) and run what it builds (try-runs,
# ctest) under qemu-user. Use with -DSL_KERNELS_ONLY=ON, which needs no
# target libraries beyond libc and, for the reference-data tests, libcjson
# for arm64 (Debian multiarch: dpkg --add-architecture arm64, then
# apt-get install libcjson-dev:arm64):
#   cmake -S . -B build-arm -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake -DSL_KERNELS_ONLY=ON
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

# Debian's cross compiler already searches the multiarch folders
# (/usr/lib/aarch64-linux-gnu, then /usr/include); pkg-config must look only
# at the target's .pc files, never the build machine's.
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")

# Binaries run under qemu-user with the arm64 C library that multiarch
# installs beside libcjson (libc6:arm64 provides /lib/ld-linux-aarch64.so.1).
# Not with "-L /usr/aarch64-linux-gnu" (the cross toolchain's copy): under
# qemu 7.2 a forked child of a dynamically linked program then hangs, and
# the tests fork to check the kernel dispatch.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64)
