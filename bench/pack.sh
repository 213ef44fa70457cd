#!/usr/bin/env bash
# Packed models against the GGUF they come from (issue 6, DESIGN.md §4, §6):
# the 7B-shape Q4_0 model streamed through `sluice run` under a budget ~12x
# smaller than the model, from the GGUF and from packs made with each codec,
# with 1 to 4 loaders. For each run:
#   - bytes read from storage per decode step (the read_bytes of the
#     pipeline's processes, /proc/PID/io; the coordinator's --stats), which
#     compression lowers;
#   - tokens/s (decode) and seconds per token, beside the storage bound
#     measured in the same run: bytes read per token / storage read
#     bandwidth (sl-storagebw, direct I/O, cold, on the GGUF, right before
#     each source's runs);
#   - the loaders' CPU time per decode step (user + system, /proc/PID/stat,
#     summed over the loaders; reading, checksumming, decompressing): what a
#     loader costs, so that a user can choose how many to run on a device.
# Each pack is made right before its runs (its time and size are printed)
# and deleted after them, so that at most one extra copy of the model is on
# disk at a time.
#
# usage: bench/pack.sh
#   SL_BUILD             build directory with bin/ (default: build)
#   SL_BENCH_DIR         where the model is (7b-q4_0.gguf, made by
#                        bench/pipeline.sh or `sluice synth`) and where packs
#                        and logs go (default /tmp/sluice-bench)
#   SL_BENCH_BUDGET      budget (default 300M)
#   SL_BENCH_N           tokens generated per run (default 8)
#   SL_BENCH_LOADERS     loader counts (default "1 2 3 4")
#   SL_BENCH_SOURCES     sources (default "gguf none lz4 zstd"; a codec means
#                        a pack made with it)
#   SL_BENCH_THREADS     compute threads (default 2)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${SL_BUILD:-$root/build}
dir=${SL_BENCH_DIR:-/tmp/sluice-bench}
budget=${SL_BENCH_BUDGET:-300M}
n=${SL_BENCH_N:-8}
loader_counts=${SL_BENCH_LOADERS:-1 2 3 4}
sources=${SL_BENCH_SOURCES:-gguf none lz4 zstd}
threads=${SL_BENCH_THREADS:-2}
bin=$build/bin
for b in sluice sluice-coordinator sluice-loader sluice-compute sl-storagebw; do
  if [[ ! -x $bin/$b ]]; then
    echo "$0: $bin/$b is missing: build first (cmake --build $build), or set SL_BUILD" >&2
    exit 1
  fi
done
model=$dir/7b-q4_0.gguf
if [[ ! -f $model ]]; then
  echo "$0: $model is missing: make it with bench/pipeline.sh or" >&2
  echo "  $bin/sluice synth -o $model --shape 7b --type q4_0" >&2
  exit 1
fi
case $(cd "$dir" && pwd)/ in "$root"/*)
  echo "$0: SL_BENCH_DIR is inside the repository; put big files elsewhere" >&2
  exit 1 ;;
esac
log=$dir/pack-runs.log
results=$dir/pack-results.txt
: >"$log"
: >"$results"

cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)
echo "machine: ${cpu:-unknown CPU}, $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM," \
     "kernel $(uname -r); model on $(df -hT "$model" | awk 'NR == 2 { print $2 " on " $1 }')"
echo "load before: $(uptime | sed 's/.*load average/load average/')"

# run SOURCE PATH LOADERS BW STORED: one `sluice run`; its figures as one
# key=value line in $results.
run() {
  local src=$1 path=$2 loaders=$3 bw=$4 stored=$5
  local args=(run -m "$path" -p "Once upon a time there was a" -n "$n" --temp 0 --ignore-eos -t "$threads"
              --workers 1 --loaders "$loaders" --mem-budget "$budget")
  echo "== $src, $loaders loaders: sluice ${args[*]}" | tee -a "$log"
  local err
  if ! err=$("$bin/sluice" "${args[@]}" 2>&1 >/dev/null); then
    echo "$err" >>"$log"
    echo "$0: the run failed; see $log" >&2
    exit 1
  fi
  echo "$err" >>"$log"
  SL_RUN_ERR=$err python3 - "$src" "$loaders" "$bw" "$stored" "$(uptime | sed 's/.*load average: //; s/,.*//')" \
    <<'PY' >>"$results"
import os, re, sys
src, loaders, bw, stored, load = sys.argv[1:]
err = os.environ["SL_RUN_ERR"]
def f(pat):
    m = re.search(pat, err)
    if not m:
        sys.exit("cannot find /%s/ in the output" % pat)
    return [float(g) for g in m.groups()]
n_gen, t_gen = f(r"generated (\d+) tokens in ([0-9.]+) s")
read_tok, = f(r"then ([0-9.]+) MiB per decode step")
cpu_tok, = f(r"loaders' CPU time \(user \+ system\): ([0-9.]+) ms per decode step")
streamed, = f(r"streamed ([0-9.]+) MiB per step")
print("src=%s loaders=%s bw=%s stored=%s load=%s spt=%.4f read_tok=%.1f cpu_tok=%.1f streamed=%.1f"
      % (src, loaders, bw, stored, load, t_gen / (n_gen - 1), read_tok, cpu_tok, streamed))
PY
  tail -n1 "$results"
}

for src in $sources; do
  path=$model
  stored=$(stat -L -c %s "$model")
  if [[ $src != gguf ]]; then
    path=$dir/7b-q4_0.pack-$src
    rm -rf "$path"
    echo "packing with $src: sluice pack -m $model -o $path --compress $src" | tee -a "$log"
    t0=$(date +%s.%N)
    "$bin/sluice" pack -m "$model" -o "$path" --compress "$src" | tee -a "$log"
    echo "pack time: $(python3 -c "import sys; print('%.1f s' % (float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$(date +%s.%N)")" | tee -a "$log"
    stored=$(du -sb "$path" | cut -f1)
  fi
  bw=$("$bin/sl-storagebw" "$model" --reps 2 -q)
  echo "storage read bandwidth (direct I/O, cold): $bw GB/s" | tee -a "$log"
  for l in $loader_counts; do
    run "$src" "$path" "$l" "$bw" "$stored"
  done
  [[ $src != gguf ]] && rm -rf "$path"
done
echo "load after: $(uptime | sed 's/.*load average/load average/')"

python3 - "$results" <<'PY'
import sys
rows = [dict(kv.split("=", 1) for kv in line.split()) for line in open(sys.argv[1])]
MiB = 1048576
print()
print("| source | loaders | on disk GB | read MiB/token (plan streams) | tokens/s | s/token | storage GB/s | "
      "bound s/token (read / bandwidth) | loader CPU ms/token | loader CPU ms per GB read | load |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    spt, read, cpu, bw = float(r["spt"]), float(r["read_tok"]), float(r["cpu_tok"]), float(r["bw"])
    print("| %s | %s | %.2f | %.1f (%.1f) | %.3f | %.3f | %.2f | %.3f | %.0f | %.0f | %s |"
          % ("GGUF" if r["src"] == "gguf" else "packed, " + r["src"], r["loaders"], int(r["stored"]) / 1e9, read,
             float(r["streamed"]), 1 / spt, spt, bw, read * MiB / (bw * 1e9), cpu,
             cpu / (read * MiB / 1e9) if read > 0 else 0, r["load"]))
PY
echo "runs' output: $log"
