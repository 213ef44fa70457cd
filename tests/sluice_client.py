"""A client of the sluice coordinator for the Python tests, written from
proto/msg.h alone, with the same Lazy Pirate retries as proto/client.h:
after `retry` seconds without an event of its request it sends the request
again (same id, resume_from = the first seq it lacks) with a status probe,
on a new socket when nothing at all was heard since the last try; when a
probe's reply comes while the request is silent it sends the request once
more (the coordinator may be answering a socket that was closed). Token
events are taken in seq order, each once. It gives up after `give_up`
seconds without any message."""
import random
import time

import msgpack
import zmq


def generate_msg(rid, prompt, n, resume_from=0):
    return {"v": 1, "t": "generate", "id": rid, "prompt": prompt, "n_predict": n, "temperature": 0.0,
            "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0, "repeat_last_n": 64,
            "presence_penalty": 0.0, "frequency_penalty": 0.0, "seed": 0, "add_bos": True,
            "resume_from": resume_from}


class GiveUp(Exception):
    pass


class Client:
    def __init__(self, ctx, endpoint, retry=0.5, give_up=30.0):
        self.ctx, self.ep, self.retry, self.give_up = ctx, endpoint, retry, give_up
        self.sock = None
        self.resends = 0
        self.epochs = set()

    def _open(self):
        if self.sock is not None:
            self.sock.close(linger=0)
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(self.ep)

    def close(self):
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    def _send(self, msg):
        try:
            self.sock.send(msgpack.packb(msg), zmq.NOBLOCK)
        except zmq.Again:
            pass  # the next retry sends again

    def generate(self, prompt, n, on_token=None, rid=None):
        """Returns (text bytes, finish). on_token(seq) is called for each new
        token event as it arrives."""
        rid = rid or (random.getrandbits(62) | 1)
        if self.sock is None:
            self._open()
        next_seq, text = 0, b""
        probe = rid ^ (1 << 62)
        now = time.monotonic()
        last_heard = last_try = now
        interval, probe_resent = self.retry, True
        self._send(generate_msg(rid, prompt, n))
        while True:
            now = time.monotonic()
            if now - last_heard > self.give_up:
                raise GiveUp("no reply for %.0f s (%d resends)" % (now - last_heard, self.resends))
            if now - last_try > interval:
                if last_heard <= last_try:
                    self._open()
                self.resends += 1
                self._send(generate_msg(rid, prompt, n, next_seq))
                probe += 1
                self._send({"v": 1, "t": "status", "id": probe})
                last_try, probe_resent = now, False
                interval = min(interval * 2, self.retry * 8)
            wait = max(0.0, last_try + interval - now)
            if not self.sock.poll(int(wait * 1000) + 1):
                continue
            m = msgpack.unpackb(self.sock.recv(), raw=False)
            if m.get("t") == "status_reply":
                last_heard = time.monotonic()
                self.epochs.add(m.get("epoch"))
                if not probe_resent:
                    probe_resent = True
                    self._send(generate_msg(rid, prompt, n, next_seq))
                continue
            if m.get("id") != rid:
                continue
            last_heard = time.monotonic()
            if m.get("t") == "error":
                raise RuntimeError("error reply: %r" % m)
            if m.get("t") != "token" or m.get("seq") != next_seq:
                continue
            next_seq += 1
            last_try, interval = last_heard, self.retry
            t = m["text"]
            text += t if isinstance(t, bytes) else t.encode()
            if on_token:
                on_token(m["seq"])
            if "finish" in m:
                return text, m["finish"]
