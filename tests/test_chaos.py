#!/usr/bin/env python3
"""Chaos test of the restart semantics (DESIGN.md §3): greedy generations
through a pipeline run by deploy/sluice-supervise (profile tiny-ci) while
stages are SIGKILLed at random moments, many times; every generation must
complete with exactly the text of an uninterrupted run.

For each model (stories260K, tiny-llama-q4_0, and the mixture of experts
tiny-moe-q8_0, each with a budget near its minimum so that it streams its
layers, and the MoE its experts, every token):
- an uninterrupted run of each prompt through the supervised pipeline gives
  the reference (and must match the in-process engine, `sluice generate`);
- two clients generate those prompts over and over (concurrent sessions)
  while the chaos loop SIGKILLs a loader, the compute worker and the
  coordinator, in random order, each round (ROUNDS rounds), at random
  moments 0.3-1.2 s apart; a stage is picked only once it has been up for
  the profile's min_uptime (a stage that dies sooner than that after every
  start is a crash loop, which test_supervise covers);
- (first model) a worker is SIGSTOPped mid-generation (hung: alive but
  silent): the coordinator must see its heartbeat go stale, kill it, and
  the supervisor start another; then the same for the coordinator, which
  the supervisor must find silent and replace;
- the supervisor is stopped and must leave no process and no
  shared-memory segment of the instance.
Then, without a supervisor, a coordinator that is restarted with other
settings cannot take its predecessor's segments over: it makes new ones,
the old loader and worker must attach to them, and the client's resend must
still give the uninterrupted text (the request is redone from the start).

It prints how many kills were survived and how long the clients waited for
their next token after each (the time to recover). Nothing asserts on
timing; every wait is bounded.

usage: test_chaos.py BUILD_BIN_DIR TESTDATA_DIR [ROUNDS]
"""
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib

import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sluice_client import Client  # noqa: E402
from sltest import instance_pids, pid_running, segments, wait_for  # noqa: E402

BIN, TESTDATA = sys.argv[1], sys.argv[2]
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUPERVISE = os.path.join(ROOT, "deploy", "sluice-supervise")
MODELS = os.path.join(TESTDATA, "models")
PROMPTS = ["Once upon a time", "The little dog"]
with open(os.path.join(ROOT, "deploy", "profiles", "tiny-ci.toml"), "rb") as _f:
    MIN_UPTIME = tomllib.load(_f)["supervise"]["min_uptime"]
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what, file=sys.stderr, flush=True)


def model(name):
    return os.path.join(MODELS, name + ".gguf")


def minimum_budget(name):
    """The smallest budget the tiny-ci settings take for this model."""
    p = subprocess.run([os.path.join(BIN, "sluice-coordinator"), "-m", model(name), "--instance", "min%d" % os.getpid(),
                        "--client", "ipc:///nonexistent/x", "-c", "256", "-b", "32", "--sessions", "2", "-t", "1",
                        "--ring", "2", "--mem-budget", "4K"], capture_output=True, timeout=60)
    m = re.search(rb"minimum is (\d+) bytes", p.stderr)
    assert m, p.stderr
    return int(m.group(1))


def in_process(name, prompt, n):
    p = subprocess.run([os.path.join(BIN, "sluice"), "generate", "-m", model(name), "-p", prompt, "-n", str(n),
                        "--temp", "0", "-t", "1"], capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


class Supervised:
    """sluice-supervise run, in the foreground, its log in a file."""

    def __init__(self, d, name, budget):
        self.instance = "chaos%d%s" % (os.getpid(), name.replace("-", "").replace("_", "")[:12])
        self.run_dir = d
        self.log_path = os.path.join(d, "supervise-%s.log" % name)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["/usr/bin/python3", SUPERVISE, "run", "tiny-ci", "-m", model(name),
                                      "--instance", self.instance, "--run-dir", d, "--bin-dir", BIN,
                                      "--mem-budget", str(budget)], stdout=self.log, stderr=self.log)
        self.ep = "ipc://%s/%s/client" % (d, self.instance)

    def state(self):
        try:
            with open(os.path.join(self.run_dir, self.instance, "state.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def stages(self):
        st = self.state()
        return {s["name"]: s for s in st["stages"]} if st else {}

    def answering(self):
        st = self.state()
        return bool(st and st["coordinator"]["answering"])

    def log_text(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.close()
        return code


class Clients:
    """Two clients generating the prompts over and over until told to stop;
    every finished text is checked against the reference."""

    def __init__(self, ctx, ep, refs, n):
        self.ctx, self.ep, self.refs, self.n = ctx, ep, refs, n
        self.stop = threading.Event()
        self.token_times = []  # monotonic time of every token event received
        self.done = 0
        self.bad = []
        self.resends = 0
        self.threads = [threading.Thread(target=self.loop, args=(i,)) for i in range(len(PROMPTS))]
        for t in self.threads:
            t.start()

    def loop(self, i):
        c = Client(self.ctx, self.ep, retry=0.5, give_up=60.0)
        try:
            k = i
            while not self.stop.is_set():
                prompt = PROMPTS[k % len(PROMPTS)]
                k += 1
                try:
                    text, finish = c.generate(prompt, self.n, on_token=lambda seq: self.token_times.append(
                        time.monotonic()))
                except Exception as e:  # noqa: BLE001 - reported as a failure
                    self.bad.append("%r: %s" % (prompt, e))
                    return
                if text + b"\n" != self.refs[prompt] or finish not in ("length", "stop"):
                    self.bad.append("%r: finish %s, text %r, want %r" % (prompt, finish, text, self.refs[prompt]))
                else:
                    self.done += 1
        finally:
            self.resends += c.resends
            c.close()

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=120)
        return not any(t.is_alive() for t in self.threads)

    def next_token_after(self, t):
        later = [x for x in list(self.token_times) if x > t]
        return min(later) - t if later else None

    def pause_after(self, t):
        return longest_pause(list(self.token_times), t, t + 30.0)


def kill_loop(sup, clients, rounds):
    """SIGKILLs every role once per round, in random order, one stage at a
    time: each kill waits until the supervisor has the stage running
    again. Returns [(role, time of the kill, seconds until its replacement
    ran or None)]."""
    kills = []
    roles = []
    for _ in range(rounds):
        roles += random.sample(["coordinator", "worker", "loader"], 3)
    deadline = time.monotonic() + 60 * rounds
    while roles and time.monotonic() < deadline:
        time.sleep(random.uniform(0.3, 1.2))
        role = roles[0]
        cands = [s for s in sup.stages().values()
                 if s["role"] == role and s["state"] == "running" and s["pid"] and (s["uptime"] or 0) >= MIN_UPTIME]
        if not cands:
            continue
        victim = random.choice(cands)
        t = time.monotonic()
        try:
            os.kill(victim["pid"], signal.SIGKILL)
        except ProcessLookupError:
            continue
        roles.pop(0)
        back = wait_for(lambda: sup.stages().get(victim["name"], {}).get("state") == "running" and
                        sup.stages()[victim["name"]]["pid"] != victim["pid"], 30, step=0.01)
        kills.append((role, t, time.monotonic() - t if back else None))
    time.sleep(1.0)  # the last kill's window, before anything else is done to the pipeline
    return kills


def longest_pause(times, t, end):
    """The longest wait between consecutive token events around time t:
    from the last one before t to the first after, and between those up to
    time `end` (the next kill): what a client felt of the kill at t."""
    times = sorted(times)
    before = [x for x in times if x <= t]
    after = [x for x in times if t < x <= end]
    if not after:
        return None
    seq = ([before[-1]] if before else [t]) + after
    return max(b - a for a, b in zip(seq, seq[1:]))


def report_kills(name, kills, clients):
    times = list(clients.token_times)
    print("%s: %d kills survived (%s); %d generations completed, all identical to the uninterrupted run; "
          "clients resent %d times" % (name, len(kills), ", ".join("%s %d" % (r, sum(1 for k in kills if k[0] == r))
                                                                   for r in ("coordinator", "worker", "loader")),
                                       clients.done, clients.resends))
    print("%s: time to recover, per role: the supervisor had a replacement running after / the clients' longest "
          "pause between tokens around the kill" % name)
    ends = [k[1] for k in kills[1:]] + [kills[-1][1] + (kills[-1][2] or 0) + 1.0] if kills else []
    for role in ("coordinator", "worker", "loader"):
        back = [k[2] for k in kills if k[0] == role and k[2] is not None]
        pause = [p for p in (longest_pause(times, k[1], end) for k, end in zip(kills, ends) if k[0] == role)
                 if p is not None]
        if back and pause:
            print("    %-11s restart median %.2f s, max %.2f s; pause median %.2f s, max %.2f s (%d kills)" %
                  (role, statistics.median(back), max(back), statistics.median(pause), max(pause), len(back)))


def hang(sup, clients, role):
    """SIGSTOPs the stage of `role` while the clients generate; it must be
    found hung, killed and replaced. Returns (seconds to its death, seconds
    to the next token)."""
    st = wait_for(lambda: next((s for s in sup.stages().values() if s["role"] == role and s["state"] == "running"
                                and s["pid"] and (s["uptime"] or 0) >= MIN_UPTIME), None), 30)
    check(st is not None, "a running %s to hang" % role)
    if not st:
        return None
    t0 = time.monotonic()
    os.kill(st["pid"], signal.SIGSTOP)
    gone = wait_for(lambda: not pid_running(st["pid"]), 60)
    t_dead = time.monotonic() - t0
    check(gone, "the stopped %s (pid %d) was killed as hung" % (role, st["pid"]))
    if not gone:
        os.kill(st["pid"], signal.SIGKILL)
    back = wait_for(lambda: sup.stages().get(st["name"], {}).get("state") == "running" and
                    sup.stages()[st["name"]]["pid"] != st["pid"], 30)
    check(back, "the supervisor started another %s" % role)
    wait_for(lambda: clients.next_token_after(t0 + t_dead) is not None, 30)
    return t_dead, clients.pause_after(t0)


def chaos(name, ctx, d, hangs):
    budget = minimum_budget(name) + 256 * 1024
    n = 200
    sup = Supervised(d, name, budget)
    clients = None
    try:
        check(wait_for(sup.answering, 60), "%s: the supervised coordinator answers" % name)
        # The uninterrupted run is the reference; it matches the engine in-process.
        refs = {}
        c = Client(ctx, sup.ep, retry=0.5, give_up=60.0)
        for p in PROMPTS:
            text, finish = c.generate(p, n)
            refs[p] = text + b"\n"
            check(refs[p] == in_process(name, p, n), "%s: %r through the pipeline equals in-process" % (name, p))
        c.close()
        clients = Clients(ctx, sup.ep, refs, n)
        kills = kill_loop(sup, clients, ROUNDS)
        roles = [k[0] for k in kills]
        check(all(roles.count(r) == ROUNDS for r in ("coordinator", "worker", "loader")),
              "%s: every role was killed %d times: %r" % (name, ROUNDS, roles))
        check(all(k[2] is not None for k in kills), "%s: every killed stage was started again" % name)
        h_worker = hang(sup, clients, "worker") if hangs else None
        h_coord = hang(sup, clients, "coordinator") if hangs else None
        # One more round of every prompt after the last kill.
        target = clients.done + len(PROMPTS)
        check(wait_for(lambda: clients.done >= target or clients.bad, 120), "%s: generations go on" % name)
        check(clients.join(), "%s: the clients finished" % name)
        check(not clients.bad, "%s: every generation is identical to the uninterrupted run: %s" % (name, clients.bad))
        check(clients.done >= 2 * len(PROMPTS), "%s: generations completed during the chaos: %d" %
              (name, clients.done))
        report_kills(name, kills, clients)
        log = sup.log_text()
        for what, h in (("worker", h_worker), ("coordinator", h_coord)):
            if h:
                print("%s: a SIGSTOPped %s was killed as hung %.1f s after it stopped; the clients' longest pause "
                      "between tokens was %.1f s" % (name, what, h[0], h[1] if h[1] is not None else float("nan")))
        if hangs:
            check("sent no heartbeat" in log, "%s: the coordinator reports the hung worker" % name)
            check("did not answer" in log, "%s: the supervisor reports the hung coordinator" % name)
        check("resuming request" in log or "board is clear" in log,
              "%s: a restarted coordinator took its predecessor's sessions over" % name)
        st = sup.stages()
        check(all(s["state"] == "running" for s in st.values()), "%s: every stage runs at the end: %r" % (name, st))
    finally:
        if clients:
            clients.join()
        code = sup.stop()
    check(code == 0, "%s: the supervisor stops cleanly (exit %r)" % (name, code))
    check(not instance_pids(sup.instance), "%s: no process left: %r" % (name, instance_pids(sup.instance)))
    check(not segments(sup.instance), "%s: no shared memory left: %r" % (name, segments(sup.instance)))
    if failed:
        sys.stderr.write(sup.log_text()[-4000:])


def rebuild(ctx, d):
    """A coordinator restarted with other settings makes new segments; the
    surviving loader and worker re-attach; the resent request is redone."""
    name, n = "stories260K", 200
    inst = "rb%d" % os.getpid()
    ep = "ipc://%s/rb-client" % d
    low = minimum_budget(name)
    coord = [os.path.join(BIN, "sluice-coordinator"), "-m", model(name), "--instance", inst, "--client", ep,
             "-c", "256", "-b", "32", "--sessions", "2", "-t", "1"]
    procs = [subprocess.Popen(coord + ["--mem-budget", str(low + 128 * 1024)])]
    procs.append(subprocess.Popen([os.path.join(BIN, "sluice-loader"), "--instance", inst]))
    procs.append(subprocess.Popen([os.path.join(BIN, "sluice-compute"), "--instance", inst, "-t", "1"]))
    want = in_process(name, PROMPTS[0], n)
    try:
        c = Client(ctx, ep, retry=0.5, give_up=60.0)
        killed = []

        def on_token(seq):
            if seq == 20 and not killed:
                procs[0].kill()
                procs[0].wait()
                killed.append(1)
                # Another budget: the segments cannot be taken over.
                procs[0] = subprocess.Popen(coord + ["--mem-budget", str(low + 512 * 1024)])
        text, finish = c.generate(PROMPTS[0], n, on_token=on_token)
        c.close()
        check(killed, "rebuild: the coordinator was killed mid-generation")
        check(text + b"\n" == want, "rebuild: the redone request gives the uninterrupted text:\n%r\n%r" % (text, want))
        check(procs[1].poll() is None and procs[2].poll() is None,
              "rebuild: the loader and the worker survived and re-attached")
    finally:
        for p in procs:
            p.terminate()
        codes = []
        for p in procs:
            try:
                codes.append(p.wait(timeout=20))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait())
    check(codes == [0, 0, 0], "rebuild: clean exits on SIGTERM: %r" % codes)
    check(not segments(inst), "rebuild: no shared memory left: %r" % segments(inst))
    print("rebuild: a coordinator restarted with another budget made new segments; the loader and worker "
          "re-attached; the resent request was redone with identical text")


def main():
    random.seed(os.getpid())
    ctx = zmq.Context()
    with tempfile.TemporaryDirectory(prefix="sl-chaos-") as d:
        try:
            for name, hangs in (("stories260K", True), ("tiny-llama-q4_0", False), ("tiny-moe-q8_0", False)):
                chaos(name, ctx, d, hangs)
            rebuild(ctx, d)
        finally:
            ctx.destroy(linger=0)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


main()
