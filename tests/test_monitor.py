#!/usr/bin/env python3
"""Monitoring, run-time budget changes and the thermal governor, end to end:
the real processes (sluice-coordinator, sluice-loader, sluice-compute) on ipc
endpoints in a temporary directory, watched with the independent Python
client tests/monitor_client.py (written from coordinator/monitor.h and
proto/msg.h only).

- A monitor that attaches mid-generation gets a consistent snapshot (the
  running session with its tokens so far, memory, processes, slots), then
  live events in order, consistent with the snapshot and with what the client
  receives; a subscriber that never reads (tiny queues) loses events but does
  not stall generation: the output is still that of the in-process engine.
- Shrinking the budget mid-generation (`sluice ctl budget`, from everything
  pinned down to the minimum) leaves the output byte-identical and lowers
  the plan's memory and the measured footprint (allocated pages of the
  pipeline's shared memory); growing it back pins everything again; a
  budget below the minimum is refused with the minimum.
- Progress events while a prompt of several steps is processed.
- A process that dies is reported down, its replacement as restarted.
- The thermal governor, on fake thermal zones above the limit, paces steps
  (visible in monitoring) without changing the output.
- `sluice top --once` renders a view of a running coordinator.

usage: test_monitor.py BUILD_BIN_DIR TESTDATA_DIR [TEST...]
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import msgpack
import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from monitor_client import Monitor  # noqa: E402
from sltest import segments  # noqa: E402

BIN, TESTDATA = sys.argv[1], sys.argv[2]
SLUICE = os.path.join(BIN, "sluice")
MODEL = os.path.join(TESTDATA, "models", "tiny-llama-f32.gguf")
PROMPT = "Once upon a time"
N = 400      # tokens per generation: long enough to act while it runs
CTX = 500
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what, file=sys.stderr)


_generated = {}


def generate(prompt=PROMPT, n=N):
    """The in-process engine's greedy text (what the pipeline must match)."""
    if (prompt, n) in _generated:
        return _generated[prompt, n]
    p = subprocess.run([SLUICE, "generate", "-m", MODEL, "-p", prompt, "-n", str(n), "--temp", "0", "-t", "2",
                        "-c", str(CTX)], capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr
    _generated[prompt, n] = p.stdout
    return p.stdout


class Pipeline:
    """A coordinator with one loader and one worker."""

    def __init__(self, d, tag, extra=(), sessions=2, batch=64):
        self.d = d
        self.ep = "ipc://%s/client" % d
        self.mon = "ipc://%s/monitor" % d
        self.inst = "m%d%s" % (os.getpid(), tag)
        cmd = [os.path.join(BIN, "sluice-coordinator"), "-m", MODEL, "--instance", self.inst, "--client", self.ep,
               "--monitor", self.mon, "-c", str(CTX), "-b", str(batch), "--sessions", str(sessions), "-t", "2",
               *extra]
        self.procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE)]
        self.loader = self.start("sluice-loader")
        self.worker = self.start("sluice-compute", "-t", "2")

    def start(self, name, *args):
        p = subprocess.Popen([os.path.join(BIN, name), "--instance", self.inst, *args])
        self.procs.append(p)
        return p

    def shm_bytes(self):
        """Allocated bytes of the pipeline's shared memory, measured here."""
        total = 0
        for f in segments(self.inst):
            try:
                total += os.stat(os.path.join("/dev/shm", f)).st_blocks * 512
            except FileNotFoundError:
                pass
        return total

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        codes = []
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            codes.append(p.returncode)
        err = self.procs[0].stderr.read() if self.procs[0].stderr else b""
        return codes, err


def dealer(ctx, ep):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(ep)
    return s


def generate_msg(rid, prompt=PROMPT, n=N):
    return {"v": 1, "t": "generate", "id": rid, "prompt": prompt, "n_predict": n, "temperature": 0.0,
            "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0, "repeat_last_n": 64,
            "presence_penalty": 0.0, "frequency_penalty": 0.0, "seed": 0, "add_bos": True}


class Stream:
    """The token events of one generate request, read as they come."""

    def __init__(self, sock, rid):
        self.sock, self.rid = sock, rid
        self.text, self.seqs, self.finish = b"", [], None

    def pump(self, timeout_ms=0):
        """Reads what has arrived; returns True once the request finished."""
        while self.finish is None and self.sock.poll(timeout_ms):
            m = msgpack.unpackb(self.sock.recv(), raw=False)
            timeout_ms = 0
            if m.get("t") != "token" or m.get("id") != self.rid:
                self.finish = "unexpected %r" % m
                break
            self.seqs.append(m["seq"])
            self.text += m["text"] if isinstance(m["text"], bytes) else m["text"].encode()
            if "finish" in m:
                self.finish = m["finish"]
        return self.finish is not None

    def wait_tokens(self, n, timeout_s=60):
        deadline = time.monotonic() + timeout_s
        while len(self.seqs) < n and not self.pump(100) and time.monotonic() < deadline:
            pass
        return len(self.seqs) >= n

    def finish_all(self, timeout_s=300, mon=None):
        """Reads until the request finished (and meanwhile the monitor, so
        that it keeps up)."""
        deadline = time.monotonic() + timeout_s
        while not self.pump(0 if mon else 200) and time.monotonic() < deadline:
            if mon:
                mon.recv(20)
        return self.finish


def wait_snapshot(mon, timeout_s=20):
    deadline = time.monotonic() + timeout_s
    while mon.snapshots == 0 and time.monotonic() < deadline:
        mon.recv(200)
    return mon.snapshots > 0


def test_attach_mid_generation():
    want, want_dog = generate(), generate("The little dog")
    with tempfile.TemporaryDirectory() as d:
        pl = Pipeline(d, "a")
        ctx = zmq.Context()
        try:
            # A subscriber that never reads, with the smallest queues.
            stuck = ctx.socket(zmq.SUB)
            stuck.setsockopt(zmq.RCVHWM, 1)
            stuck.setsockopt(zmq.RCVBUF, 4096)
            stuck.setsockopt(zmq.LINGER, 0)
            stuck.setsockopt(zmq.SUBSCRIBE, b"")
            stuck.connect(pl.mon)
            a, b = dealer(ctx, pl.ep), dealer(ctx, pl.ep)
            a.send(msgpack.packb(generate_msg(11)))
            b.send(msgpack.packb(generate_msg(22, "The little dog")))
            sa, sb = Stream(a, 11), Stream(b, 22)
            check(sa.wait_tokens(30), "the generation starts: %r" % sa.finish)

            mon = Monitor(ctx, pl.mon)
            check(wait_snapshot(mon), "a monitor attaching mid-generation gets a snapshot")
            begin = next(e for e in mon.events if e.kind == "snapshot.begin")
            end = next(e for e in mon.events if e.kind == "snapshot.end")
            snap = [e for e in mon.events if begin.seq <= e.seq <= end.seq]
            check([e.seq for e in snap] == list(range(begin.seq, end.seq + 1)) and begin.f["last"] == begin.seq - 1,
                  "the snapshot is one run of consecutive events after `last`")
            check(len(snap) == begin.f["n"] + 2, "snapshot.begin counts its events: %d vs %d" %
                  (begin.f["n"], len(snap) - 2))
            cfg, mem = mon.one("config"), mon.one("mem")
            check(cfg is not None and cfg["instance"] == pl.inst and cfg["n_ctx"] == CTX and cfg["epoch"] > 0,
                  "snapshot config: %r" % cfg)
            check(mem is not None and mem["used"] > 0 and mem["units_pinned"] == cfg["n_units"] and
                  mem["shm"] >= mem["used"] // 2 and mem["ring_slots"] == 0, "snapshot mem (all pinned): %r" % mem)
            roles = sorted(f["role"] for f in mon.state.get("proc", {}).values())
            check(roles == ["compute", "coordinator", "loader"], "snapshot processes: %r" % roles)
            check(len(mon.state.get("slot", {})) == cfg["ring_depth"], "snapshot slots: %r" % mon.state.get("slot"))
            for k in ("pressure", "thermal", "stats"):
                check(mon.one(k) is not None, "snapshot has %s" % k)
            sess = {f["id"]: f for f in mon.state.get("session", {}).values()}
            check(set(sess) == {11, 22} and all(f["state"] == "start" and f["n_gen"] >= 1 for f in sess.values()),
                  "snapshot sessions with their progress: %r" % sess)

            # Live events after the snapshot: in order, each token following
            # the snapshot's count for its session.
            last_gen = {i: f["n_gen"] for i, f in sess.items()}
            bad, tokens_seen, steps = [], 0, 0
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not (sa.finish and sb.finish):
                sa.pump()
                sb.pump()
                ev = mon.recv(50)
                if ev is None or ev.seq <= end.seq:
                    continue
                if ev.kind == "token" and ev.f["id"] in last_gen:
                    tokens_seen += 1
                    if mon.gaps == 0 and ev.f["n_gen"] != last_gen[ev.f["id"]] + 1:
                        bad.append((ev.f["id"], last_gen[ev.f["id"]], ev.f["n_gen"]))
                    last_gen[ev.f["id"]] = ev.f["n_gen"]
                    if ev.f["hits"] != cfg["n_units"] or ev.f["misses"] != 0:
                        bad.append(("units", ev.f))
                elif ev.kind == "step":
                    steps += 1
            sa.finish_all()
            sb.finish_all()
            check(not bad, "token events follow the snapshot one by one: %r" % bad[:5])
            check(tokens_seen > 0 and steps > 0, "live token (%d) and step (%d) events" % (tokens_seen, steps))
            for s, w, p in ((sa, want, PROMPT), (sb, want_dog, "The little dog")):
                check(s.finish == "length" and s.text + b"\n" == w, "%r: output with a stuck subscriber" % p)
            # Everything has been published by now; the stuck subscriber
            # holds the beginning of the stream and lost the rest.
            got = []
            while stuck.poll(200):
                got.append(msgpack.unpackb(stuck.recv_multipart()[1], raw=False)["seq"])
            published = mon.last_seq
            check(got and len(got) < published and got == sorted(got),
                  "the stuck subscriber lost events (%d of %d) instead of blocking" % (len(got), published))
            mon.close()
        finally:
            ctx.destroy(linger=0)
            codes, err = pl.stop()
        check(codes == [0, 0, 0], "clean exits: %r %r" % (codes, err[-300:]))


def ctl(ep, *args):
    return subprocess.run([SLUICE, "ctl", "--connect", ep, *args], capture_output=True, timeout=60)


def test_budget_shrink_mid_generation():
    want = generate()
    with tempfile.TemporaryDirectory() as d:
        pl = Pipeline(d, "b")  # no budget: everything pinned
        ctx = zmq.Context()
        try:
            mon = Monitor(ctx, pl.mon)
            check(wait_snapshot(mon), "snapshot")
            before = mon.one("mem")
            shm_before = pl.shm_bytes()
            a = dealer(ctx, pl.ep)
            a.send(msgpack.packb(generate_msg(31)))
            s = Stream(a, 31)
            check(s.wait_tokens(20), "the generation starts")
            # Below the minimum: refused with the minimum, nothing changes.
            c = dealer(ctx, pl.ep)
            c.send(msgpack.packb({"v": 1, "t": "budget", "id": 5, "bytes": 4096}))
            r = msgpack.unpackb(c.recv(), raw=False) if c.poll(20000) else None
            check(r is not None and r.get("t") == "error" and r.get("code") == 8 and r.get("id") == 5 and
                  str(before["min_budget"]) in r.get("msg", ""), "a budget below the minimum: %r" % r)
            # Shrink to the minimum while tokens flow.
            n_at_shrink = len(s.seqs)
            p = ctl(pl.ep, "--json", "budget", str(before["min_budget"]))
            s.pump()
            n_after_reply = len(s.seqs)
            check(p.returncode == 0, "sluice ctl budget: %r" % p.stderr)
            reply = json.loads(p.stdout) if p.returncode == 0 else {}
            check(reply.get("mem_budget") == before["min_budget"] and reply.get("mem_used") < before["used"] and
                  reply.get("streamed", 0) > 0 and reply.get("pinned") < before["pinned"],
                  "the shrunk plan streams and pins less: %r vs %r" % (reply, before))
            check(s.finish_all(mon=mon) == "length", "the generation goes on: %r" % s.finish)
            check(n_after_reply < len(s.seqs) and n_at_shrink >= 20,
                  "the budget changed mid-generation (%d, %d of %d tokens)" % (n_at_shrink, n_after_reply,
                                                                            len(s.seqs)))
            check(s.text + b"\n" == want, "output identical across the shrink:\n%r\n%r" % (s.text, want))
            def shrunk(e):
                return e.kind == "mem" and e.f["reason"] == "ctl"
            ev = next((e for e in mon.events if shrunk(e)), None) or mon.wait_for(shrunk)
            check(ev is not None and ev.f["used"] < before["used"] and ev.f["shm"] < before["shm"] and
                  ev.f["ring_slots"] >= 2 and ev.f["units_pinned"] < before["units_pinned"],
                  "monitoring shows the smaller footprint: %r -> %r" % (before, ev and ev.f))
            # The plan's saving (pinned weights given back, less the ring now
            # used) shows in the pages the segments occupy.
            shm_after = pl.shm_bytes()
            saving = before["used"] - reply.get("mem_used", before["used"])
            check(saving > 0 and shm_after < shm_before - saving // 2,
                  "measured shared memory went down: %d -> %d bytes (plan: -%d)" % (shm_before, shm_after, saving))
            kinds = [e.f["state"] for e in mon.events if e.kind == "budget"]
            check(kinds == ["refused", "pending", "done"], "budget events: %r" % kinds)
            steps = [e for e in mon.events if e.kind == "step"]
            check(any(e.f["misses"] > 0 and e.f["bytes"] > 0 for e in steps),
                  "after the shrink, steps stream units from storage")
            # Grow back: everything pinned again, same output.
            p = ctl(pl.ep, "--json", "budget", "1G")
            reply = json.loads(p.stdout) if p.returncode == 0 else {}
            check(p.returncode == 0 and reply.get("streamed") == 0 and reply.get("pinned") == before["pinned"],
                  "growing pins everything again: %r %r" % (reply, p.stderr))
            check(pl.shm_bytes() > shm_after, "growing reserves the memory again")
            a.send(msgpack.packb(generate_msg(32)))
            s = Stream(a, 32)
            check(s.finish_all() == "length" and s.text + b"\n" == want, "output after growing back")
            p = ctl(pl.ep, "status")
            check(p.returncode == 0 and b"sessions" in p.stdout, "sluice ctl status: %r" % p.stdout)
            p = ctl(pl.ep, "budget", "1K")
            check(p.returncode == 1 and b"minimum" in p.stderr, "ctl refusal: %r" % p.stderr)
            p = ctl(pl.ep, "budget", "lots")
            check(p.returncode == 2, "ctl bad size: %r" % p.stderr)
            mon.close()
        finally:
            ctx.destroy(linger=0)
            codes, err = pl.stop()
        check(codes == [0, 0, 0], "clean exits: %r %r" % (codes, err[-300:]))
        check(not segments(pl.inst), "no segments left")


def test_progress_restarts_and_top():
    prompt = " ".join(["Once upon a time there was a little dog."] * 6)
    want = generate(prompt, 8)
    with tempfile.TemporaryDirectory() as d:
        pl = Pipeline(d, "p", batch=8)
        ctx = zmq.Context()
        try:
            mon = Monitor(ctx, pl.mon)
            check(wait_snapshot(mon), "snapshot")
            a = dealer(ctx, pl.ep)
            a.send(msgpack.packb(generate_msg(41, prompt, 8)))
            s = Stream(a, 41)
            check(s.finish_all() == "length" and s.text + b"\n" == want, "long prompt output")
            mon.wait_for(lambda e: e.kind == "session" and e.f["state"] == "end")
            prog = [e.f for e in mon.events if e.kind == "progress" and e.f["id"] == 41]
            fed = [f["fed"] for f in prog if f["step_tokens"] == 0]
            total = prog[0]["total"] if prog else 0
            check(total > 16 and fed == list(range(8, total, 8)) + [total],
                  "a progress event after each prompt step: %r of %d" % (fed, total))
            check(all(f["units"] == mon.one("config")["n_units"] for f in prog), "progress names the units")

            # `sluice top` on the running coordinator.
            p = subprocess.run([SLUICE, "top", "--connect", pl.mon, "--once", "--interval", "0.3"],
                               capture_output=True, timeout=60)
            out = p.stdout.decode(errors="replace")
            check(p.returncode == 0 and "sluice top:" in out and pl.inst in out and "loader 0" in out and
                  "compute 0" in out and "ring" in out and "memory" in out and "\033[" not in out,
                  "sluice top --once: %r %r" % (out, p.stderr))

            # A loader dies and another takes its place.
            pl.loader.send_signal(signal.SIGKILL)
            pl.loader.wait()
            ev = mon.wait_for(lambda e: e.kind == "proc" and e.f["role"] == "loader")
            check(ev is not None and ev.f["state"] == "down" and ev.f["pid"] == pl.loader.pid,
                  "a killed loader is reported down: %r" % (ev and ev.f))
            new = pl.start("sluice-loader")
            ev = mon.wait_for(lambda e: e.kind == "proc" and e.f["role"] == "loader")
            check(ev is not None and ev.f["state"] == "restarted" and ev.f["pid"] == new.pid and
                  ev.f["restarts"] == 1, "its replacement is reported restarted: %r" % (ev and ev.f))
            ev = mon.wait_for(lambda e: e.kind == "stats")
            check(ev is not None and ev.f["restarts"] == 1, "stats count the restart")
            mon.close()
        finally:
            ctx.destroy(linger=0)
            codes, err = pl.stop()
        check(codes[0] == 0, "clean coordinator exit: %r" % err[-300:])
    # Nothing to connect to: top gives up.
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.run([SLUICE, "top", "--connect", "ipc://%s/none" % d, "--once", "--timeout", "1"],
                           capture_output=True, timeout=30)
        check(p.returncode == 1 and b"no snapshot" in p.stderr, "top without a coordinator: %r" % p.stderr)


def test_thermal_pacing():
    want = generate(PROMPT, 64)
    with tempfile.TemporaryDirectory() as d:
        zone = os.path.join(d, "thermal", "thermal_zone0")
        os.makedirs(zone)
        with open(os.path.join(zone, "temp"), "w") as f:
            f.write("95000\n")
        os.makedirs(os.path.join(d, "thermal", "cooling_device0"))
        pl = Pipeline(d, "t", ("--thermal-root", os.path.join(d, "thermal"), "--thermal-limit", "70"))
        ctx = zmq.Context()
        try:
            mon = Monitor(ctx, pl.mon)
            check(wait_snapshot(mon), "snapshot")
            ev = mon.wait_for(lambda e: e.kind == "thermal" and e.f["state"] == "hot")
            check(ev is not None and ev.f["temp_c"] == 95.0 and ev.f["zones"] == 1 and ev.f["duty"] < 1.0 and
                  ev.f["limit_c"] == 70.0, "a zone over the limit is seen hot: %r" % (ev and ev.f))
            a = dealer(ctx, pl.ep)
            a.send(msgpack.packb(generate_msg(51, PROMPT, 64)))
            s = Stream(a, 51)
            check(s.finish_all() == "length" and s.text + b"\n" == want, "output while paced")
            mon.wait_for(lambda e: e.kind == "session" and e.f["state"] == "end")
            paced = [e.f["paced_ms"] for e in mon.events if e.kind == "step"]
            check(len(paced) > 2 and all(p > 0 for p in paced[1:]), "steps are paced: %r" % paced[:8])
            mon.close()
        finally:
            ctx.destroy(linger=0)
            codes, err = pl.stop()
        check(codes == [0, 0, 0], "clean exits: %r %r" % (codes, err[-300:]))


tests = (test_attach_mid_generation, test_budget_shrink_mid_generation, test_progress_restarts_and_top,
         test_thermal_pacing)
for t in tests:
    if len(sys.argv) < 4 or t.__name__ in sys.argv[3:]:
        t()
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
