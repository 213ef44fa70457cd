#!/usr/bin/env python3
"""An independent client of the coordinator's monitoring stream, written from
the specification in coordinator/monitor.h and proto/msg.h alone (pyzmq and
msgpack, Debian's python3-zmq and python3-msgpack), not from the C code.

As a library: Monitor(ctx, endpoint) subscribes, decodes every event (and
refuses anything that does not follow the specification), keeps the state
that snapshots and live events describe, and counts gaps in seq.

As a program: monitor_client.py ENDPOINT [SECONDS] prints each event as one
JSON line for SECONDS (default 5).
"""
import json
import sys
import time

import msgpack
import zmq

SCALARS = (type(None), bool, int, float, str)
# Stateful kinds: how each entity is keyed (monitor.h "Kinds and fields").
KEYS = {
    "config": lambda f: None,
    "mem": lambda f: None,
    "pressure": lambda f: None,
    "thermal": lambda f: None,
    "stats": lambda f: None,
    "proc": lambda f: (f["role"], f["rid"]),
    "slot": lambda f: f["slot"],
    "session": lambda f: f["session"],
}
# Fields every event of a kind carries.
FIELDS = {
    "config": ("model", "instance", "epoch", "pid", "n_ctx", "n_batch", "max_sessions", "n_units", "ring_depth",
               "threads"),
    "proc": ("role", "rid", "pid", "state", "restarts"),
    "session": ("id", "session", "state", "n_prompt", "n_predict", "n_gen", "finish"),
    "progress": ("id", "session", "fed", "total", "step_tokens", "units_done", "units"),
    "step": ("n", "seqs", "tokens", "ms", "paced_ms", "bytes", "hits", "misses", "streamed", "status"),
    "token": ("id", "session", "seq", "tok", "n_gen", "ms", "bytes", "hits", "misses"),
    "slot": ("slot", "state", "unit", "holders", "fills", "fill_ms", "used"),
    "mem": ("budget", "used", "pinned", "ring", "kv", "act", "streamed", "min_budget", "shm", "units_pinned",
            "ring_slots", "reason"),
    "budget": ("from", "to", "source", "state", "min_budget", "error"),
    "pressure": ("state", "stall_ms", "window_ms", "some_avg10", "full_avg10", "triggers", "action"),
    "thermal": ("state", "temp_c", "limit_c", "zones", "duty", "paced_ms"),
    "stats": ("uptime_s", "tokens", "steps", "loaded_bytes", "loaded_units", "hits", "misses", "restarts",
              "sessions", "max_sessions", "paced_ms", "events"),
    "snapshot.begin": ("n", "epoch", "last"),
    "snapshot.end": ("n",),
}


class ProtocolError(Exception):
    pass


class Event:
    def __init__(self, kind, seq, ts, fields):
        self.kind, self.seq, self.ts, self.f = kind, seq, ts, fields

    def base(self):
        """The live kind a snapshot event restates ("snapshot.mem" -> "mem")."""
        if self.kind.startswith("snapshot.") and self.kind not in ("snapshot.begin", "snapshot.end"):
            return self.kind[len("snapshot."):]
        return self.kind

    def __repr__(self):
        return "Event(%s #%d %r)" % (self.kind, self.seq, self.f)


def decode(frames):
    """Two frames, [kind][msgpack event]; raises ProtocolError otherwise."""
    if len(frames) != 2:
        raise ProtocolError("%d frames, expected 2" % len(frames))
    topic, body = frames
    try:
        m = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as e:
        raise ProtocolError("not msgpack: %s" % e)
    if not isinstance(m, dict) or m.get("v") != 1 or m.get("t") != "event":
        raise ProtocolError("not a version 1 event: %r" % (m,))
    kind = m.get("kind")
    if not isinstance(kind, str) or kind.encode() != topic or len(topic) > 32:
        raise ProtocolError("kind %r does not match the topic frame %r" % (kind, topic))
    seq, ts, f = m.get("seq"), m.get("ts"), m.get("f", {})
    if not isinstance(seq, int) or seq < 1 or not isinstance(ts, int) or ts <= 0:
        raise ProtocolError("%s: seq %r / ts %r" % (kind, seq, ts))
    if not isinstance(f, dict) or len(f) > 32:
        raise ProtocolError("%s: f is not a map of at most 32 fields" % kind)
    for k, v in f.items():
        if not isinstance(k, str) or not isinstance(v, SCALARS):
            raise ProtocolError("%s: field %r = %r" % (kind, k, v))
    ev = Event(kind, seq, ts, f)
    missing = [k for k in FIELDS.get(ev.base(), ()) if k not in f]
    if missing:
        raise ProtocolError("%s: missing fields %s" % (kind, missing))
    return ev


class Monitor:
    """A SUB socket on the stream plus the state it describes."""

    def __init__(self, ctx, endpoint, prefix=b"", rcvhwm=None):
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        if rcvhwm is not None:
            self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self.sock.setsockopt(zmq.SUBSCRIBE, prefix)
        self.sock.connect(endpoint)
        self.last_seq = None
        self.gaps = 0
        self.state = {}          # kind -> {key: fields}
        self.in_snapshot = None  # fields of snapshot.begin while one is being received
        self.snapshot_count = 0
        self.snapshots = 0       # complete snapshots received
        self.events = []         # every event, in order

    def close(self):
        self.sock.close()

    def recv(self, timeout_ms=1000):
        if not self.sock.poll(timeout_ms):
            return None
        ev = decode(self.sock.recv_multipart())
        if self.last_seq is not None and ev.seq != self.last_seq + 1:
            if ev.seq <= self.last_seq:
                raise ProtocolError("seq went from %d to %d" % (self.last_seq, ev.seq))
            self.gaps += 1
        self.last_seq = ev.seq
        self.events.append(ev)
        self.apply(ev)
        return ev

    def apply(self, ev):
        if ev.kind == "snapshot.begin":
            self.in_snapshot = dict(ev.f)
            self.snapshot_count = 0
            self.state = {}  # the snapshot restates everything
            return
        if ev.kind == "snapshot.end":
            if self.in_snapshot is None or ev.f["n"] != self.in_snapshot["n"] or \
                    self.snapshot_count != ev.f["n"]:
                raise ProtocolError("snapshot.end %r after %r with %d events" %
                                    (ev.f, self.in_snapshot, self.snapshot_count))
            self.in_snapshot = None
            self.snapshots += 1
            return
        kind = ev.base()
        if ev.kind.startswith("snapshot."):
            if self.in_snapshot is None:
                raise ProtocolError("%s outside a snapshot" % ev.kind)
            self.snapshot_count += 1
        if kind not in KEYS:
            return  # transient (step, token, progress, budget) or unknown
        key = KEYS[kind](ev.f)
        ents = self.state.setdefault(kind, {})
        gone = (kind == "proc" and ev.f["state"] == "down") or (kind == "session" and ev.f["state"] == "end")
        if gone:
            ents.pop(key, None)
        else:
            ents[key] = dict(ev.f)

    def one(self, kind):
        """The fields of a singleton entity (config, mem, ...), or None."""
        return self.state.get(kind, {}).get(None)

    def wait_for(self, pred, timeout_s=30):
        """Receives until pred(event) holds; returns that event or None."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ev = self.recv(200)
            if ev is not None and pred(ev):
                return ev
        return None


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    ctx = zmq.Context()
    mon = Monitor(ctx, sys.argv[1])
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            ev = mon.recv(200)
            if ev:
                print(json.dumps({"kind": ev.kind, "seq": ev.seq, "ts": ev.ts, "f": ev.f}), flush=True)
    finally:
        mon.close()
        ctx.destroy(linger=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
