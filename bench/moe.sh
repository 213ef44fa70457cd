#!/usr/bin/env bash
# The mixture-of-experts benchmark (issue 7, DESIGN.md §6): synthesized MoE
# models far larger than the budget, streamed through the pipeline, which
# reads only the experts the router chose and caches the hot ones.
#
# Models (synthesized once, Q4_0, cut to a few layers so that the files stay
# a few GB): the Mixtral 8x7B shape (8 experts, 2 used) and the Qwen3-30B-A3B
# shape (128 experts, 8 used). For each, at budgets that give the expert
# cache 2 slots (the minimum) and then 1/8, 1/4 and 1/2 of all experts:
#   - decode tokens/s, and the expert cache's hit rate (experts used by a
#     decode step that were cached, over those used);
#   - bytes read from storage per decode step (the read_bytes of the
#     pipeline's processes, /proc/PID/io, as the coordinator's --stats
#     reports), against the model of it: expert misses x expert bytes (the
#     bytes of the experts the cache asked loaders for) + the streamed bytes
#     of the layers without their experts;
#   - the storage bound of that (bytes / storage bandwidth), and the same
#     bound for streaming every expert of every layer per token (the
#     dense-equivalent cost of the model);
# then, at one budget, prefetching on against off, and least-recently-used
# eviction (half-life 0) against the default frequency policy.
# Two ways of decoding, because they route so differently: greedy, where a
# random-weight model soon repeats itself and so do its routings (the cache
# then holds nearly everything used), and sampled (temperature 1, seed 1),
# where each token is near random and so is its routing: no expert is
# hotter than another, the worst case for any cache (real models sit in
# between: skewed routing, as DESIGN.md §2 expects).
# Storage bandwidth is sl-storagebw (direct I/O, cold, best of 3) on each
# model before its runs. Each run warms the cache with one request and
# measures a second one on the same pipeline (steady state).
#
# usage: bench/moe.sh
#   SL_BUILD           build directory with bin/ (default: build)
#   SL_BENCH_DIR       where the models are cached and the logs written
#                      (default /tmp/sluice-bench; outside the repository)
#   SL_BENCH_MODELS    shape:layers list (default "8x7b:8 30b-a3b:16")
#   SL_BENCH_N         tokens generated per measured request (default 24)
#   SL_BENCH_LOADERS   loader processes (default 2)
#   SL_BENCH_THREADS   compute threads (default 2)
#   SL_BENCH_FRACTIONS fractions of the experts the cache may hold, besides
#                      the minimum (default "0.125 0.25 0.5")
#   SL_BENCH_MODES     decoding modes (default "sampled greedy")
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${SL_BUILD:-$root/build}
dir=${SL_BENCH_DIR:-/tmp/sluice-bench}
models=${SL_BENCH_MODELS:-8x7b:8 30b-a3b:16}
n=${SL_BENCH_N:-24}
loaders=${SL_BENCH_LOADERS:-2}
threads=${SL_BENCH_THREADS:-2}
fractions=${SL_BENCH_FRACTIONS:-0.125 0.25 0.5}
modes=${SL_BENCH_MODES:-sampled greedy}
bin=$build/bin
for b in sluice sluice-coordinator sluice-loader sluice-compute sl-storagebw; do
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

cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)
ram=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
echo "machine: ${cpu:-unknown CPU}, $(nproc) cores, $ram RAM, kernel $(uname -r)"
echo "load before: $(uptime | sed 's/.*load average/load average/')"

for spec in $models; do
  shape=${spec%%:*} layers=${spec##*:}
  model=$dir/moe-$shape-l$layers-q4_0.gguf
  if [[ ! -f $model ]]; then
    echo "synthesizing $model (once)"
    "$bin/sluice" synth -o "$model" --shape "$shape" --layers "$layers" --type q4_0
  fi
done

python3 - "$bin" "$dir" "$n" "$loaders" "$threads" "$fractions" "$modes" $models <<'PY'
import os, re, subprocess, sys, tempfile, time
bin_, dir_, n, loaders, threads, fractions, modes = sys.argv[1:8]
n, loaders, threads = int(n), int(loaders), int(threads)
fractions = [float(x) for x in fractions.split()]
modes = modes.split()
specs = sys.argv[8:]
SAMPLING = {"greedy": ["--temp", "0"], "sampled": ["--temp", "1", "--seed", "1"]}
MiB = 1048576
PROMPT = "Once upon a time there was a"
log = open(os.path.join(dir_, "moe-runs.log"), "w")


def grab(pat, text, what):
    m = re.findall(pat, text)
    if not m:
        sys.exit("cannot find /%s/ in the output of %s (see %s)" % (pat, what, log.name))
    g = m[-1]
    return [float(x) for x in (g if isinstance(g, tuple) else (g,))]


def run(model, budget, mode, prefetch="off", halflife=None):
    """One pipeline: a warm-up request, then the measured one."""
    d = tempfile.mkdtemp(prefix="sluice-moe-")
    inst, ep = "moeb%d" % os.getpid(), "ipc://%s/client" % d
    cmd = [os.path.join(bin_, "sluice-coordinator"), "-m", model, "--instance", inst, "--client", ep,
           "-c", str(16 + 2 * n), "-b", "16", "--sessions", "1", "-t", str(threads), "--stats",
           "--mem-budget", str(budget), "--expert-prefetch", prefetch,
           # On a busy shared machine a worker can be descheduled for
           # seconds: do not take that for a hang (one worker, no restarts).
           "--hang-timeout", "300",
           # The budget is what is measured: no shrinking under pressure.
           "--pressure-stall", "0"]
    if halflife is not None:
        cmd += ["--expert-halflife", str(halflife)]
    errf = open(os.path.join(d, "coord.err"), "w+")
    procs = [subprocess.Popen(cmd, stderr=errf)]
    procs += [subprocess.Popen([os.path.join(bin_, "sluice-loader"), "--instance", inst]) for _ in range(loaders)]
    procs.append(subprocess.Popen([os.path.join(bin_, "sluice-compute"), "--instance", inst, "-t", str(threads)]))
    client = [os.path.join(bin_, "sluice"), "run", "--connect", ep, "-p", PROMPT, "--ignore-eos", *SAMPLING[mode]]
    try:
        time.sleep(1.0)
        w = subprocess.run(client + ["-n", str(n // 2)], capture_output=True, timeout=3600)
        r = subprocess.run(client + ["-n", str(n)], capture_output=True, timeout=3600)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    errf.seek(0)
    err = errf.read()
    what = "%s budget %d %s prefetch %s halflife %s" % (os.path.basename(model), budget, mode, prefetch, halflife)
    log.write("== %s\n%s%s%s\n" % (what, w.stderr.decode(errors="replace"), r.stderr.decode(errors="replace"), err))
    log.flush()
    if w.returncode or r.returncode:
        sys.exit("%s failed (see %s)" % (what, log.name))
    tps, = grab(r"then ([0-9.]+) tokens/s", r.stderr.decode(), what)
    used, cached, rate, pref, pref_used, demand, exp_mib, wait_ms, slots, slot_mib = grab(
        r"experts per decode step: ([0-9.]+) used, ([0-9.]+) from the cache \(hit rate ([0-9.]+)%\), "
        r"([0-9.]+) prefetched \(([0-9.]+) of them used\), ([0-9.]+) loaded on demand; ([0-9.]+) MiB of experts "
        r"read per step, ([0-9.]+) ms waiting for them \(expert cache: (\d+) slots of ([0-9.]+) MiB\)", err, what)
    read, = grab(r"then ([0-9.]+) MiB per decode step", err, what)
    streamed, pinned, base = grab(r"streamed ([0-9.]+) MiB per step \(pinned ([0-9.]+) MiB of ([0-9.]+) MiB\)", err,
                                  what)
    return dict(tps=tps, used=used, cached=cached, rate=rate, pref=pref, pref_used=pref_used, demand=demand,
                exp_mib=exp_mib, wait_ms=wait_ms, slots=int(slots), slot_mib=slot_mib, read=read, streamed=streamed,
                pinned=pinned, base=base, budget=budget)


for spec in specs:
    shape, layers = spec.split(":")
    model = os.path.join(dir_, "moe-%s-l%s-q4_0.gguf" % (shape, layers))
    size = os.path.getsize(model)
    info = subprocess.run([os.path.join(bin_, "sluice"), "info", "-m", model], capture_output=True).stdout.decode()
    e_per, e_used = (int(x) for x in re.search(r"experts +(\d+) per layer, (\d+) used", info).groups())
    e_all, = (float(x) for x in re.search(r"MiB each, ([0-9.]+) MiB in all; [0-9.]+ MiB of experts per token",
                                           info).groups())
    n_units = e_per * int(layers)
    bw = float(subprocess.run([os.path.join(bin_, "sl-storagebw"), model, "--reps", "3", "-q"],
                              capture_output=True, text=True, check=True).stdout)
    p = subprocess.run([os.path.join(bin_, "sluice-coordinator"), "-m", model, "--instance", "moeprobe", "--client",
                        "ipc:///tmp/moeprobe", "-c", str(16 + 2 * n), "-b", "16", "--sessions", "1", "-t", str(threads),
                        "--mem-budget", "4K"], capture_output=True, text=True)
    low = int(re.search(r"minimum is (\d+) bytes", p.stderr).group(1))
    slot = float(re.search(r"expert slots \(([0-9.]+) MiB each\)", p.stderr).group(1))
    slot_bytes = int(slot * MiB)  # to 0.1 MiB: the table reports the slots each budget gave
    print("\n### %s shape, %s layers, Q4_0: %.2f GB (%d experts of %.1f MiB, %d used per token per layer); "
          "storage %.2f GB/s" % (shape, layers, size / 1e9, n_units, e_all / n_units, e_used, bw))
    for mode in modes:
        rows = [("minimum", run(model, low, mode))]
        for f in fractions:
            k = int(round(f * n_units))
            rows.append(("%g of the experts" % f, run(model, low + max(0, k - 2) * slot_bytes, mode)))
        print("\n%s decoding:\n" % mode)
        print("| budget MiB | expert slots | hit rate | tokens/s | read per token MiB | model: misses x expert + "
              "streamed MiB | read / model | storage bound s/token | dense-equivalent bound s/token |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, r in rows:
            model_mib = r["exp_mib"] + r["streamed"]
            dense = e_all + r["streamed"]
            print("| %.0f (%s) | %d | %.1f%% | %.2f | %.1f | %.1f | %.3f | %.3f | %.3f |"
                  % (r["budget"] / MiB, name, r["slots"], r["rate"], r["tps"], r["read"], model_mib,
                     r["read"] / model_mib if model_mib else float("nan"), model_mib * MiB / (bw * 1e9),
                     dense * MiB / (bw * 1e9)))
        # Policies and prefetching at the budget of 1/4 of the experts (or
        # the nearest measured).
        k = int(round(0.25 * n_units))
        b = low + max(0, k - 2) * slot_bytes
        base = [r for name, r in rows if r["budget"] == b]
        base = base[0] if base else run(model, b, mode)
        variants = [("frequency (half-life 64), no prefetch", base),
                    ("least recently used (half-life 0), no prefetch", run(model, b, mode, halflife=0)),
                    ("frequency, prefetch from the next router", run(model, b, mode, prefetch="on"))]
        print("\n%s decoding at %.0f MiB (%d expert slots):\n" % (mode, b / MiB, base["slots"]))
        print("| policy | hit rate | prefetched per token (used) | on demand per token | waiting ms per token | "
              "read per token MiB | tokens/s |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for name, r in variants:
            print("| %s | %.1f%% | %.1f (%.1f) | %.1f | %.1f | %.1f | %.2f |"
                  % (name, r["rate"], r["pref"], r["pref_used"], r["demand"], r["wait_ms"], r["read"], r["tps"]))
        sys.stdout.flush()
PY
echo "load after: $(uptime | sed 's/.*load average/load average/')"
