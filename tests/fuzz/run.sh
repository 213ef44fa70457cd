#!/usr/bin/env bash
# Runs every libFuzzer target of a fuzz build for a bounded time.
#
#   tests/fuzz/run.sh BUILD_DIR SECONDS
#
# BUILD_DIR was configured with CC=clang -DSL_FUZZ=ON and built. For each
# BUILD_DIR/bin/fuzz_<x>, a fresh corpus is made in a temporary directory
# (seeded by BUILD_DIR/bin/make_<x>_corpus when it exists) and the target
# runs for SECONDS. Inputs that crash are kept in BUILD_DIR/fuzz-artifacts/
# <target>/ to reproduce with `BUILD_DIR/bin/fuzz_<x> FILE`. Exits 1 when any
# target found a crash, 2 on a usage error.
set -euo pipefail

if [ $# -ne 2 ] || ! [[ $2 =~ ^[0-9]+$ ]]; then
  echo "usage: $0 BUILD_DIR SECONDS" >&2
  exit 2
fi
build=$1
seconds=$2
bin="$build/bin"

shopt -s nullglob
fuzzers=("$bin"/fuzz_*)
if [ ${#fuzzers[@]} -eq 0 ]; then
  echo "$0: no fuzz targets in $bin (configure with CC=clang -DSL_FUZZ=ON and build)" >&2
  exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

failed=()
for fuzzer in "${fuzzers[@]}"; do
  name=$(basename "$fuzzer")
  corpus="$work/$name"
  artifacts="$build/fuzz-artifacts/$name"
  mkdir -p "$corpus" "$artifacts"
  seeder="$bin/make_${name#fuzz_}_corpus"
  if [ -x "$seeder" ]; then
    "$seeder" "$corpus"
  fi
  echo "=== $name: ${seconds}s, $(ls "$corpus" | wc -l) seeds"
  # -close_fd_mask=2: the parsers log every rejected input to stderr;
  # libFuzzer keeps its own output and the sanitizer reports on a duplicate.
  if ! "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
       -close_fd_mask=2 -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus"; then
    echo "=== $name: FAILED (inputs kept in $artifacts)" >&2
    failed+=("$name")
  fi
done

if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzzing found problems in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzzing: no crashes in ${#fuzzers[@]} target(s)"
