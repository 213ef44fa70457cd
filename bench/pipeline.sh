#!/usr/bin/env bash
# The pipeline benchmark (issue 3, DESIGN.md §6): a 7B-shape Q4_0 model
# (3.8 GB, synthesized once) run through `sluice run` under a memory budget
# more than 10x smaller than the model, each figure beside its physical
# bound measured on this machine in this run:
#   - storage read bandwidth, direct I/O, cold (sl-storagebw, best of 3
#     passes), measured right before and right after every streamed run;
#     the higher of the two is the limit (the device did at least that);
#     and memory bandwidth (sl-membw);
#   - decode: seconds per token, bytes read from storage per token (the
#     read_bytes of the pipeline's processes, /proc/PID/io, which the
#     coordinator reports with --stats) against the plan's model bytes minus pinned bytes, and
#     the fraction of the storage limit reached,
#         (bytes per token / storage bandwidth) / (seconds per token),
#     with 1, 2 and 3 loaders;
#   - compute alone: the same pipeline with every weight pinned (nothing
#     streams), so the compute-vs-storage balance is visible;
#   - peak memory of all sluice processes together (resident memory,
#     shared memory counted once; the `sluice run` client included) beside
#     the budget and the plan;
#   - a 256-token prompt next to one decode step at the same budget.
# Prints the machine, each run's own statistics, then markdown tables.
#
# usage: bench/pipeline.sh
#   SL_BUILD                build directory with bin/ (default: build)
#   SL_BENCH_DIR            where the model and the prompt are cached and the
#                           logs written (default /tmp/sluice-bench; keep it
#                           out of the repository)
#   SL_BENCH_BUDGET         decode budget (default 300M)
#   SL_BENCH_PROMPT_BUDGET  budget of the 256-token prompt run (default 700M)
#   SL_BENCH_N              tokens generated per decode run (default 16)
#   SL_BENCH_LOADERS        loader counts to run (default "1 2 3")
#   SL_BENCH_RING           streaming slots (default 2)
#   SL_BENCH_THREADS        compute threads (default 2)
#   SL_BENCH_ROUNDS         times to repeat the streamed runs (default 1)
#   SL_BENCH_TABLE_ONLY     when set: print the tables of the last run again
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${SL_BUILD:-$root/build}
dir=${SL_BENCH_DIR:-/tmp/sluice-bench}
budget=${SL_BENCH_BUDGET:-300M}
prompt_budget=${SL_BENCH_PROMPT_BUDGET:-700M}
n=${SL_BENCH_N:-16}
loader_counts=${SL_BENCH_LOADERS:-1 2 3}
ring=${SL_BENCH_RING:-2}
threads=${SL_BENCH_THREADS:-2}
rounds=${SL_BENCH_ROUNDS:-1}
bin=$build/bin
for b in sluice sluice-coordinator sluice-loader sluice-compute sl-membw sl-storagebw; do
  if [[ ! -x $bin/$b ]]; then
    echo "$0: $bin/$b is missing: build first (cmake --build $build), or set SL_BUILD" >&2
    exit 1
  fi
done
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
case $dir/ in "$root"/*)
  echo "$0: SL_BENCH_DIR=$dir is inside the repository; put big files elsewhere" >&2
  exit 1 ;;
esac
model=$dir/7b-q4_0.gguf
prompt="Once upon a time there was a"

# ---- the model and the 256-token prompt (cached) ---------------------------
if [[ ! -f $model ]]; then
  echo "synthesizing $model (once; 3.8 GB)"
  "$bin/sluice" synth -o "$model" --shape 7b --type q4_0
fi
prompt256=$dir/prompt-256.txt
if [[ ! -f $prompt256 ]]; then
  # The longest prefix of a word list that encodes (with BOS) to at most
  # 256 tokens.
  python3 - "$bin/sluice" "$model" "$prompt256" <<'PY'
import json, subprocess, sys
sluice, model, out = sys.argv[1:]
words = ("the quick brown fox jumps over the lazy dog while seven wizards quietly "
         "mix a potion of bright yellow honey and cold river water ").split() * 64
def count(k):
    text = " ".join(words[:k])
    p = subprocess.run([sluice, "tokenize", "-m", model, "--text", text, "--json"],
                       capture_output=True, check=True)
    return len(json.loads(p.stdout)), text
lo, hi = 1, len(words)
while lo < hi:
    mid = (lo + hi + 1) // 2
    if count(mid)[0] <= 256:
        lo = mid
    else:
        hi = mid - 1
n, text = count(lo)
open(out, "w").write(text)
print("prompt of %d tokens written to %s" % (n, out))
PY
fi

# tables: the markdown tables and summary of $results.
tables() {
python3 - "$results" "$(cat "$dir/pipeline-membw.txt")" <<'PY'
import statistics, sys
rows = [dict(kv.split("=", 1) for kv in line.split()) for line in open(sys.argv[1])]
membw = float(sys.argv[2])
MiB = 1048576
for r in rows:
    r["spt"] = float(r["t_gen"]) / (int(r["n_gen"]) - 1)
    r["bw"] = max(float(r["bw0"]), float(r["bw1"]))
    r["got"] = float(r["read_tok"]) * MiB / r["spt"] / 1e9
    r["frac"] = r["got"] / r["bw"] if r["bw"] > 0 else None
print()
print("| run | round | budget | s/token | read/token MiB (model - pinned) | read GB/s | "
      "storage GB/s before, after | fraction of the higher | peak PSS MiB, all processes (plan) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    print("| %s | %s | %s | %.3f | %.1f (%.1f) | %.2f | %s | %s | %.1f (%.1f) |"
          % (r["name"], r["round"], r["budget"] if r["budget"] != "-" else "none: all pinned", r["spt"],
             float(r["read_tok"]), float(r["model"]) - float(r["pinned"]), r["got"],
             "%s, %s" % (r["bw0"], r["bw1"]) if r["bw"] > 0 else "-",
             "%.2f" % r["frac"] if r["frac"] else "-", float(r["peak"]), float(r["plan_total"])))
print()
model = float(rows[0]["model"])
print("memory bound: %.1f MiB touched per token / %.1f GB/s = %.3f s/token"
      % (model, membw, model * MiB / (membw * 1e9)))
pinned = [r for r in rows if r["name"] == "pinned"]
if pinned:
    print("compute alone (everything pinned, nothing streamed): %.3f s/token" % pinned[0]["spt"])
names = sorted({r["name"] for r in rows if r["frac"]})
for name in names:
    fr = [r["frac"] for r in rows if r["name"] == name]
    print("%s: fraction of the storage limit, median of %d: %.2f (range %.2f-%.2f)"
          % (name, len(fr), statistics.median(fr), min(fr), max(fr)))
dec = [r for r in rows if r["name"].startswith("decode") and r["bw"] > 0]
if dec:
    got = statistics.median(r["got"] for r in dec)
    bws = statistics.median([float(r["bw0"]) for r in dec] + [float(r["bw1"]) for r in dec])
    print("all %d decode runs: median read rate %.2f GB/s; all %d storage measurements around them: median "
          "%.2f GB/s; ratio %.2f" % (len(dec), got, 2 * len(dec), bws, got / bws))
over = [float(r["peak"]) - float(r["plan_total"]) for r in rows]
print("peak PSS minus the plan's shared memory: %.1f to %.1f MiB (the fixed overhead)" % (min(over), max(over)))
for p in (r for r in rows if r["name"] == "prompt256"):
    print("prompt of %s tokens (round %s): %.3f s = %.1f decode steps of %.3f s at the same budget (%s); "
          "%.1f MiB read for it (%.2f x the streamed bytes of a step)"
          % (p["n_prompt"], p["round"], float(p["t_prompt"]), float(p["t_prompt"]) / p["spt"], p["spt"],
             p["budget"], float(p["read_first"]), float(p["read_first"]) / float(p["streamed"])))
PY
}

if [[ -n ${SL_BENCH_TABLE_ONLY:-} ]]; then
  log=$dir/pipeline-runs.log results=$dir/pipeline-results.txt
  tables
  exit 0
fi

# ---- the machine and its memory bound ----------------------------------------
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)
ram=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
disk=$(df -hT "$model" | awk 'NR == 2 { print $2 " on " $1 }')
echo "machine: ${cpu:-unknown CPU}, $(nproc) cores, $ram RAM, kernel $(uname -r); model on $disk"
echo "load before: $(uptime | sed 's/.*load average/load average/')"
membw=$("$bin/sl-membw" --threads "$(nproc)" -q)
echo "memory read bandwidth: $membw GB/s ($(nproc) threads)"
echo "$membw" >"$dir/pipeline-membw.txt"

storage_bw() { "$bin/sl-storagebw" "$model" --reps 3 -q; }

log=$dir/pipeline-runs.log
: >"$log"
results=$dir/pipeline-results.txt
: >"$results"

# run NAME ROUND BUDGET|- BW_BEFORE BW_AFTER ARGS...: one `sluice run`; its
# stderr goes to the log (sluice lines also to the terminal), its figures to
# $results as one line of key=value. `sluice run` reports the peak
# resident memory of the pipeline it started (its processes' RssAnon +
# RssFile, plus the allocated size of the shared-memory segments: shared
# memory counted once); the client's own proportional set size is sampled
# here every 50 ms and added, so "peak" covers every sluice process. (Summing the whole tree from outside would
# count shared memory twice while processes exit: the reads are not atomic.)
run() {
  local name=$1 round=$2 bud=$3 bw0=$4 bw1=$5
  shift 5
  local args=(-m "$model" --temp 0 --ignore-eos -t "$threads" --workers 1 --ring "$ring" "$@")
  [[ $bud != - ]] && args+=(--mem-budget "$bud")
  echo "== $name (round $round): sluice run ${args[*]}" | tee -a "$log"
  python3 - "$name" "$round" "$bud" "$bw0" "$bw1" "$log" "$bin/sluice" run "${args[@]}" >>"$results" <<'PY'
import os, re, subprocess, sys, threading, time
name, rnd, bud, bw0, bw1, log = sys.argv[1:7]
cmd = sys.argv[7:]

def pss_kb(pid):
    try:
        for line in open("/proc/%d/smaps_rollup" % pid):
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0

p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
out = []
reader = threading.Thread(target=lambda: out.append(p.stderr.read().decode(errors="replace")))
reader.start()
peak = 0
while p.poll() is None:
    peak = max(peak, pss_kb(p.pid))
    time.sleep(0.05)
reader.join()
err = out[0]
with open(log, "a") as f:
    f.write(err)
    f.write("peak PSS of the `sluice run` client, sampled by the benchmark: %.1f MiB\n" % (peak / 1024))
for line in err.splitlines():
    if line.startswith("sluice"):
        print(line, file=sys.stderr)
if p.returncode:
    sys.exit("run %s failed (exit %d):\n%s" % (name, p.returncode, err))

def f(pat):
    m = re.search(pat, err)
    if not m:
        sys.exit("cannot find /%s/ in the output of run %s" % (pat, name))
    return [float(g) for g in m.groups()]
pinned_plan, ring_n, slot, kv, act = f(
    r"budget plan: ([0-9.]+) MiB pinned, (\d+) x ([0-9.]+) MiB ring, ([0-9.]+) MiB KV, ([0-9.]+) MiB activations")
n_prompt, t_prompt, n_gen, t_gen = f(r"prompt (\d+) tokens in ([0-9.]+) s; generated (\d+) tokens in ([0-9.]+) s")
streamed, pinned, model_mib = f(r"streamed ([0-9.]+) MiB per step \(pinned ([0-9.]+) MiB of ([0-9.]+) MiB\)")
peak_own, = f(r"peak memory of the pipeline ([0-9.]+) MiB")
before_first, per_tok = f(r"([0-9.]+) MiB for the prompt, then ([0-9.]+) MiB per decode step")
print("name=%s round=%s budget=%s bw0=%s bw1=%s n_prompt=%d t_prompt=%.3f n_gen=%d t_gen=%.3f streamed=%.1f "
      "pinned=%.1f model=%.1f peak=%.1f peak_client=%.1f peak_own=%.1f read_first=%.1f read_tok=%.1f plan_total=%.1f"
      % (name, rnd, bud, bw0, bw1, n_prompt, t_prompt, n_gen, t_gen, streamed, pinned, model_mib, peak_own + peak / 1024,
         peak / 1024, peak_own, before_first, per_tok, pinned_plan + ring_n * slot + kv + act))
PY
}

# measured NAME ROUND BUDGET ARGS...: a streamed run between two storage
# bandwidth measurements.
measured() {
  local name=$1 round=$2 bud=$3
  shift 3
  local bw0 bw1
  bw0=$(storage_bw)
  echo "storage read bandwidth before: $bw0 GB/s" | tee -a "$log"
  run "$name" "$round" "$bud" "$bw0" X "$@"
  bw1=$(storage_bw)
  echo "storage read bandwidth after: $bw1 GB/s" | tee -a "$log"
  sed -i '$ s/ bw1=X / bw1='"$bw1"' /' "$results"
}

for round in $(seq 1 "$rounds"); do
  for l in $loader_counts; do
    measured "decode-L$l" "$round" "$budget" -p "$prompt" -n "$n" --loaders "$l"
  done
  measured "prompt256" "$round" "$prompt_budget" -f "$prompt256" -n 4 --loaders 2
done
run "pinned" 1 - 0 0 -p "$prompt" -n "$n" --loaders 1
echo "load after: $(uptime | sed 's/.*load average/load average/')"

tables
echo "runs' output: $log"
