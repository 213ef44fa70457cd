#!/usr/bin/env bash
# Runs every test sluice has, in the order CI needs them:
#   1. the Release build and its ctest suite (unit, kernel, end-to-end);
#   2. the same suite built with AddressSanitizer + UndefinedBehaviorSanitizer;
#   3. each libFuzzer target for a bounded time (SL_FUZZ_SECONDS, default 30);
#   4. the aarch64 cross build (compute core, NEON kernels) and its suite
#      under qemu-user.
# Builds whatever is missing, so a fresh clone needs only the README's first
# command (which installs the packages) before this one.
# Every ctest run gives a test at most 600 s (the longest take ~3 min under
# load), so a hang fails the run instead of stalling it.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
fuzz_seconds=${SL_FUZZ_SECONDS:-30}

stage() { printf '\n=== %s ===\n' "$*"; }

# The official openai client the gateway's node test drives: the README's
# first command installs it; a checkout that missed that step gets it here
# (from the npm registry, pinned by tests/node/package-lock.json).
if command -v npm >/dev/null && [ ! -d tests/node/node_modules/openai ]; then
  stage "npm ci --prefix tests/node"
  npm ci --prefix tests/node --no-audit --no-fund
fi

stage "release build + tests"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure --timeout 600 -j"$jobs"

stage "ASan + UBSan build + tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSL_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure --timeout 600 -j"$jobs"

stage "fuzzing (${fuzz_seconds}s per target)"
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSL_FUZZ=ON >/dev/null
cmake --build build-fuzz -j"$jobs"
tests/fuzz/run.sh build-fuzz "$fuzz_seconds"

stage "aarch64 cross build + tests under qemu-user (NEON)"
cmake -S . -B build-arm -DCMAKE_BUILD_TYPE=Release -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
  -DSL_KERNELS_ONLY=ON >/dev/null
cmake --build build-arm -j"$jobs"
ctest --test-dir build-arm --output-on-failure --timeout 600 -j"$jobs"

stage "summary"
echo "all stages: 4 passed, 0 failed"
