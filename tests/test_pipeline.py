#!/usr/bin/env python3
"""Integration tests of the streaming pipeline: the real processes
(sluice-coordinator, sluice-loader, sluice-compute) on ipc endpoints in a
temporary directory.

- Greedy output through the pipeline is byte-identical to the in-process
  engine, for every reference model, with budgets that force streaming and
  with 1-3 loaders and 1-2 workers.
- A budget below the minimum is refused with the minimum in the message.
- Two clients run concurrent sessions against one coordinator; each gets the
  in-process text. The clients speak the protocol with pyzmq + msgpack,
  written from proto/msg.h alone.
- Malformed, wrongly versioned and oversized messages get an error reply (or
  a dropped connection) and the coordinator keeps serving.

usage: test_pipeline.py BUILD_BIN_DIR TESTDATA_DIR
"""
import os
import re
import subprocess
import sys
import tempfile
import time

import msgpack
import zmq

BIN, TESTDATA = sys.argv[1], sys.argv[2]
SLUICE = os.path.join(BIN, "sluice")
MODELS = os.path.join(TESTDATA, "models")
PROMPT = "Once upon a time"
N = 32
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what, file=sys.stderr)


def model(name):
    return os.path.join(MODELS, name + ".gguf")


def generate(name, prompt=PROMPT, n=N):
    p = subprocess.run([SLUICE, "generate", "-m", model(name), "-p", prompt, "-n", str(n), "--temp", "0", "-t", "2"],
                       capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def run(name, *args, prompt=PROMPT, n=N):
    return subprocess.run([SLUICE, "run", "-m", model(name), "-p", prompt, "-n", str(n), "--temp", "0", "-t", "2",
                           *args], capture_output=True, timeout=180)


def minimum_budget(name):
    p = run(name, "--mem-budget", "4K")
    m = re.search(rb"minimum is (\d+) bytes", p.stderr)
    check(p.returncode == 1 and m is not None, "%s: a 4K budget is refused with the minimum: %r" % (name, p.stderr))
    return int(m.group(1)) if m else None


def check_storage_reads(what, err, streamed):
    """The coordinator (--stats, which `sluice run` passes) measures the bytes
    its pipeline read from storage (the processes' read_bytes); per decode
    step that is the plan's streamed bytes per step, give or take the 4 KiB
    rounding of each unit and the units prefetched across the ends of the
    measured window. Page-cache hits are not storage reads, so the lower
    bound holds only with direct I/O."""
    m = re.search(rb"then ([0-9.]+) MiB per decode step", err)
    check(m is not None, "%s: storage reads are reported: %r" % (what, err[-400:]))
    if not m or not streamed or b"does not support direct I/O" in err:
        return
    got, want = float(m.group(1)), float(streamed.group(1))
    check(0.8 * want - 0.05 <= got <= 1.5 * want + 0.1,
          "%s: %.3f MiB read per decode step, %.1f MiB streamed per step" % (what, got, want))


def test_streaming_matches_in_process():
    names = sorted(f[:-5] for f in os.listdir(MODELS) if f.endswith(".gguf") and not f.startswith("tiny-moe"))
    for name in names:
        want = generate(name)
        check(len(want) > N // 2, "%s: in-process output is not empty" % name)
        low = minimum_budget(name)
        if low is None:
            continue
        size = os.path.getsize(model(name))
        combos = [(1, 1), (3, 2)] if name not in ("stories260K", "tiny-llama-q4_k_m") else \
            [(1, 1), (1, 2), (2, 1), (3, 1), (3, 2)]
        for budget in (low, low + size // 2):
            for loaders, workers in combos:
                p = run(name, "--mem-budget", str(budget), "--loaders", str(loaders), "--workers", str(workers))
                what = "%s budget %d loaders %d workers %d" % (name, budget, loaders, workers)
                check(p.returncode == 0, "%s: exit %d: %r" % (what, p.returncode, p.stderr[-400:]))
                check(p.stdout == want, "%s: output differs:\n%r\n%r" % (what, p.stdout, want))
                streamed = re.search(rb"streamed ([0-9.]+) MiB per step", p.stderr)
                check(streamed is not None and (budget != low or float(streamed.group(1)) > 0),
                      "%s: the minimum budget streams weights" % what)
                check_storage_reads(what, p.stderr, streamed)
        # Everything pinned (no budget) too.
        p = run(name)
        check(p.returncode == 0 and p.stdout == want, "%s: pinned pipeline output differs" % name)


def test_bad_input():
    p = subprocess.run([SLUICE, "run", "-m", "/nonexistent.gguf", "-p", "x"], capture_output=True, timeout=30)
    check(p.returncode == 1 and b"cannot read model" in p.stderr, "missing model: %r" % p.stderr)
    p = subprocess.run([SLUICE, "run", "-m", model("stories260K"), "-p", "x", "--mem-budget", "lots"],
                       capture_output=True, timeout=30)
    check(p.returncode == 2 and b"--mem-budget" in p.stderr, "bad budget: %r" % p.stderr)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.monotonic()
        p = subprocess.run([SLUICE, "run", "--connect", "ipc://%s/nobody" % d, "-p", "x"], capture_output=True,
                           timeout=60)
        check(p.returncode == 1 and b"no reply from the coordinator" in p.stderr and time.monotonic() - t0 < 30,
              "unreachable coordinator: %r" % p.stderr)


class Pipeline:
    """A coordinator with one loader and one worker, started by the test."""

    def __init__(self, d, name, sessions=2):
        self.ep = "ipc://%s/client" % d
        self.mon = "ipc://%s/monitor" % d
        inst = "t%d" % os.getpid()
        cmd = [os.path.join(BIN, "sluice-coordinator"), "-m", model(name), "--instance", inst, "--client", self.ep,
               "--monitor", self.mon, "-c", "128", "-b", "32", "--sessions", str(sessions), "-t", "2"]
        # The smallest budget this configuration allows, so that it streams.
        p = subprocess.run(cmd + ["--mem-budget", "4K"], capture_output=True, timeout=30)
        m = re.search(rb"minimum is (\d+) bytes", p.stderr)
        check(p.returncode == 1 and m is not None, "coordinator refuses a 4K budget: %r" % p.stderr)
        cmd += ["--mem-budget", m.group(1).decode() if m else "64M"]
        self.procs = [subprocess.Popen(cmd)]
        self.procs.append(subprocess.Popen([os.path.join(BIN, "sluice-loader"), "--instance", inst]))
        self.procs.append(subprocess.Popen([os.path.join(BIN, "sluice-compute"), "--instance", inst, "-t", "2"]))

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return [p.returncode for p in self.procs]


def client(ctx, ep):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(ep)
    return s


def request(s, msg, timeout_ms=20000):
    s.send(msgpack.packb(msg))
    if not s.poll(timeout_ms):
        return None
    return msgpack.unpackb(s.recv(), raw=False)


def generate_msg(rid, prompt, n=N):
    return {"v": 1, "t": "generate", "id": rid, "prompt": prompt, "n_predict": n, "temperature": 0.0,
            "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0, "repeat_last_n": 64,
            "presence_penalty": 0.0, "frequency_penalty": 0.0, "seed": 0, "add_bos": True}


def token_text(m):
    t = m.get("text", b"")
    return t if isinstance(t, bytes) else t.encode()


def collect(s, rid, timeout_s=60):
    """Token events of request rid until the last one: (text, finish, seqs)."""
    text, seqs, deadline = b"", [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not s.poll(1000):
            continue
        m = msgpack.unpackb(s.recv(), raw=False)
        if m.get("t") != "token" or m.get("id") != rid:
            return text, "unexpected %r" % m, seqs
        seqs.append(m["seq"])
        text += token_text(m)
        if "finish" in m:
            return text, m["finish"], seqs
    return text, "timeout", seqs


def test_concurrent_clients_and_bad_messages():
    prompts = ["Once upon a time", "The little dog"]
    want = [generate("stories260K", p) for p in prompts]
    with tempfile.TemporaryDirectory() as d:
        pl = Pipeline(d, "stories260K")
        ctx = zmq.Context()
        try:
            a, b = client(ctx, pl.ep), client(ctx, pl.ep)
            st = request(a, {"v": 1, "t": "status", "id": 7})
            check(st is not None and st.get("t") == "status_reply" and st.get("id") == 7, "status reply: %r" % st)
            r = request(a, {"v": 1, "t": "tokenize", "id": 8, "text": prompts[0], "add_bos": True})
            check(r is not None and r.get("t") == "tokens" and r.get("tokens") == [1, 403, 407, 261, 378],
                  "tokenize reply: %r" % r)
            r = request(a, {"v": 1, "t": "detokenize", "id": 9, "tokens": [1, 403, 407, 261, 378]})
            check(r is not None and r.get("t") == "text" and r.get("text").strip() == prompts[0].encode(),
                  "detokenize reply: %r" % r)
            # Both requests are in before either finishes: they share steps.
            a.send(msgpack.packb(generate_msg(101, prompts[0])))
            b.send(msgpack.packb(generate_msg(202, prompts[1])))
            firsts = [msgpack.unpackb(s.recv(), raw=False) if s.poll(20000) else {} for s in (a, b)]
            check(all(f.get("t") == "token" and f.get("seq") == 0 and "finish" not in f for f in firsts),
                  "both generations started: %r" % firsts)
            # Both sessions are in use: a third request is told to come back later.
            c = client(ctx, pl.ep)
            r = request(c, generate_msg(303, prompts[0]))
            check(r is not None and r.get("t") == "error" and r.get("code") == 10 and r.get("id") == 303,
                  "a request while every session is busy: %r" % r)
            c.close()
            ra, rb = collect(a, 101), collect(b, 202)
            ra, rb = [(token_text(f) + text, finish, [0] + seqs) for f, (text, finish, seqs) in
                      zip(firsts, (ra, rb))]
            for (text, finish, seqs), w, p in ((ra, want[0], prompts[0]), (rb, want[1], prompts[1])):
                check(finish == "length", "%r: finish %r" % (p, finish))
                check(seqs == list(range(len(seqs))), "%r: seq numbers 0..n-1 without gaps" % p)
                check(text + b"\n" == w, "%r: concurrent output differs:\n%r\n%r" % (p, text, w))

            # Garbage, a wrong version, an unknown type, a missing field.
            for payload, code, what in (
                    (b"\xc1\xc1 not msgpack", 2, "garbage"),
                    (msgpack.packb({"v": 99, "t": "status", "id": 5}), 9, "version 99"),
                    (msgpack.packb({"v": 1, "t": "frobnicate", "id": 5}), 3, "unknown type"),
                    (msgpack.packb({"v": 1, "t": "generate", "id": 5}), 2, "missing n_predict"),
                    (msgpack.packb({"v": 1, "t": "generate", "id": 5, "prompt": 3, "n_predict": 1}), 6,
                     "prompt of the wrong type")):
                a.send(payload)
                r = msgpack.unpackb(a.recv(), raw=False) if a.poll(10000) else None
                check(r is not None and r.get("t") == "error" and r.get("code") == code,
                      "%s gets an error with code %d: %r" % (what, code, r))
            # Over a field's cap but within the message cap: an error reply.
            r = request(a, generate_msg(505, "x" * (5 << 20)))
            check(r is not None and r.get("t") == "error" and r.get("code") == 8, "a 5 MiB prompt: %r" % r)
            # Over the message cap: libzmq drops the connection before reading it.
            big = client(ctx, pl.ep)
            big.send(b"\x00" * (9 << 20))
            check(not big.poll(2000), "an oversized message gets no reply")
            big.close()
            # A prompt beyond the context is refused; the coordinator keeps serving.
            r = request(a, generate_msg(303, "word " * 400))
            check(r is not None and r.get("t") == "error" and r.get("id") == 303, "over-long prompt: %r" % r)
            a.send(msgpack.packb(generate_msg(404, prompts[0])))
            text, finish, _ = collect(a, 404)
            check(finish == "length" and text + b"\n" == want[0], "still serving after bad input")
            # Cancel of an unknown request.
            r = request(a, {"v": 1, "t": "cancel", "id": 999})
            check(r is not None and r.get("t") == "error" and r.get("code") == 5, "cancel unknown: %r" % r)
            # The CLI as a client of a running coordinator.
            p = subprocess.run([SLUICE, "run", "--connect", pl.ep, "-p", prompts[1], "-n", str(N), "--temp", "0"],
                               capture_output=True, timeout=60)
            check(p.returncode == 0 and p.stdout == want[1], "run --connect: %r" % p.stderr[-300:])
        finally:
            ctx.destroy(linger=0)
            codes = pl.stop()
        check(codes == [0, 0, 0], "clean exits on SIGTERM: %r" % codes)
        left = [f for f in os.listdir("/dev/shm") if f.startswith("sluice-t%d-" % os.getpid())]
        check(not left, "no shared-memory segments left: %r" % left)


tests = (test_bad_input, test_concurrent_clients_and_bad_messages, test_streaming_matches_in_process)
for t in tests:
    if len(sys.argv) < 4 or t.__name__ in sys.argv[3:]:
        t()
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
