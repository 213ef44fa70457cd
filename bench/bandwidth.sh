#!/usr/bin/env bash
# Prints the two physical bounds of DESIGN.md §6 for this machine: memory
# read bandwidth (sl-membw) and the cold, direct-I/O sequential read
# bandwidth of FILE (sl-storagebw), with the machine they were measured on.
#
# usage: bench/bandwidth.sh FILE
#   SL_BUILD   build directory holding bin/sl-membw and bin/sl-storagebw
#              (default: build, beside this script's folder)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${SL_BUILD:-$root/build}
if [[ $# -ne 1 ]]; then
  echo "usage: $0 FILE   (a large file on the storage to measure, e.g. from 'sluice synth')" >&2
  exit 2
fi
file=$1
for b in sl-membw sl-storagebw; do
  if [[ ! -x $build/bin/$b ]]; then
    echo "$0: $build/bin/$b is missing: build first (cmake --build $build), or set SL_BUILD" >&2
    exit 1
  fi
done
if [[ ! -f $file ]]; then
  echo "$0: $file is not a file" >&2
  exit 1
fi

model=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)
ram=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
echo "machine: ${model:-unknown CPU}, $(nproc) cores, $ram RAM, kernel $(uname -r)"
echo "file:    $file ($(df -hT "$file" | awk 'NR == 2 { print $2 " on " $1 }'))"

mem=$("$build/bin/sl-membw")
echo "$mem" | sed 's/^/  /'
stor=$("$build/bin/sl-storagebw" "$file")
echo "$stor" | sed 's/^/  /'

echo "memory read bandwidth:  $(echo "$mem" | sed -n 's/^best: //p')"
echo "storage read bandwidth: $(echo "$stor" | sed -n 's/^best: //p')"
