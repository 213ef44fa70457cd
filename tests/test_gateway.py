#!/usr/bin/env python3
"""The HTTP gateway end to end: `sluice serve` (a pipeline of its own) driven
over HTTP with python3's http.client and with curl.

- /v1/completions with stories260K, prompt "Once upon a time", temperature 0,
  max_tokens 64 returns exactly the reference continuation
  (../shared/testdata/refs), streamed and not; usage and timings; stop
  strings cut the text where they begin, also across token boundaries.
- /v1/chat/completions (the built-in chatml template) whole and streamed
  (role first, finish_reason, include_usage, [DONE]); /apply-template.
- /health (503 while no coordinator answers, 200 when ready), /v1/models,
  /tokenize and /detokenize (against the reference token ids), /metrics
  (parsed as Prometheus text, llama.cpp's names and sluice's own).
- Malformed JSON, wrong types, unknown fields, oversized bodies, a missing or
  wrong API key, unknown URLs and methods: OpenAI-shaped errors with the right
  status, and the server keeps serving.
- Concurrent requests (more than the sessions: some wait in the queue) each
  get their own reference continuation; a client that disconnects mid-stream
  cancels its generation.
- Hybrid routing: a second gateway is the fallback; a request for a model
  that is not local, and every request of a gateway with
  --max-local-seconds 0, are served by it (X-Sluice-Served-By: fallback),
  with its key; with the fallback gone, local requests are served locally.

usage: test_gateway.py BUILD_BIN_DIR TESTDATA_DIR
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

BIN, TESTDATA = sys.argv[1], sys.argv[2]
SLUICE = os.path.join(BIN, "sluice")
MODEL = os.path.join(TESTDATA, "models", "stories260K.gguf")
KEY = "test-key-123"
passed = failed = 0

with open(os.path.join(TESTDATA, "refs", "stories260K.ref.json")) as f:
    REFS = {c["prompt"]: c for c in json.load(f)["cases"]}
PROMPT = "Once upon a time"
WANT = bytes.fromhex(REFS[PROMPT]["greedy_text_hex"]).decode()


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what, file=sys.stderr)


class Server:
    """A `sluice serve` (or other command) whose stderr is collected; the
    port is the one it prints."""

    def __init__(self, *args, cmd=None):
        self.cmd = cmd or [SLUICE, "serve", "-m", MODEL, "--port", "0", "-t", "1", "--loaders", "1", *args]
        self.p = subprocess.Popen(self.cmd, stderr=subprocess.PIPE)
        self.err = []
        self.port = None
        seen = threading.Event()

        def drain():
            for line in self.p.stderr:
                line = line.decode(errors="replace")
                self.err.append(line)
                m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    seen.set()
            seen.set()

        threading.Thread(target=drain, daemon=True).start()
        seen.wait(30)
        assert self.port, "no port in %r" % self.err

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if request(self, "GET", "/health")[0] == 200:
                return True
            time.sleep(0.05)
        return False

    def stop(self):
        self.p.terminate()
        try:
            return self.p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return self.p.wait()


def request(srv, method, path, body=None, key=KEY, headers=None, raw=None, timeout=60):
    """Returns (status, headers dict (lower-case names), body bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    h = {"Content-Type": "application/json"}
    if key:
        h["Authorization"] = "Bearer " + key
    h.update(headers or {})
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    out = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, out


def post(srv, path, body, **kw):
    status, headers, out = request(srv, "POST", path, body, **kw)
    try:
        return status, headers, json.loads(out)
    except ValueError:
        return status, headers, out


def stream(srv, path, body, key=KEY):
    """POSTs a streamed request; returns (status, headers, [event dicts], saw [DONE] last)."""
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    h = {"Content-Type": "application/json"}
    if key:
        h["Authorization"] = "Bearer " + key
    c.request("POST", path, body=json.dumps(body), headers=h)
    r = c.getresponse()
    headers = {k.lower(): v for k, v in r.getheaders()}
    events, done = [], False
    for line in r:
        line = line.decode().rstrip("\r\n")
        if not line.startswith("data: "):
            continue
        check(not done, "nothing after [DONE]")
        if line == "data: [DONE]":
            done = True
        else:
            events.append(json.loads(line[6:]))
    c.close()
    return r.status, headers, events, done


def is_error(status, body, want_status, code=None, param=None):
    """An OpenAI-shaped error: {"error": {"message", "type", "param", "code"}}."""
    e = body.get("error") if isinstance(body, dict) else None
    ok = (status == want_status and isinstance(e, dict) and isinstance(e.get("message"), str) and e["message"]
          and isinstance(e.get("type"), str) and "param" in e and "code" in e)
    if ok and code is not None:
        ok = e["code"] == code
    if ok and param is not None:
        ok = e["param"] == param
    return ok


def completion_text(events):
    return "".join(e["choices"][0]["text"] for e in events if e.get("choices"))


def test_reference(srv):
    body = {"model": "stories260K", "prompt": PROMPT, "temperature": 0, "max_tokens": 64}
    status, headers, r = post(srv, "/v1/completions", body)
    check(status == 200, "completion: %r %r" % (status, r))
    if status != 200:
        return
    ch = r["choices"][0]
    check(ch["text"] == WANT, "the reference continuation, not streamed:\n%r\n%r" % (ch["text"], WANT))
    check(ch["finish_reason"] == "length" and r["object"] == "text_completion" and r["id"].startswith("cmpl-"),
          "finish_reason, object, id: %r" % r)
    n_prompt = len(REFS[PROMPT]["prompt_tokens"])
    check(r["usage"] == {"prompt_tokens": n_prompt, "completion_tokens": 64, "total_tokens": n_prompt + 64},
          "usage: %r" % r["usage"])
    t = r["timings"]
    check(t["prompt_n"] == n_prompt and t["predicted_n"] == 64 and t["prompt_ms"] > 0 and t["predicted_ms"] > 0,
          "timings: %r" % t)
    check(headers.get("x-sluice-served-by") == "local", "served locally: %r" % headers)

    status, headers, events, done = stream(srv, "/v1/completions", dict(body, stream=True,
                                                                        stream_options={"include_usage": True}))
    check(status == 200 and headers.get("content-type", "").startswith("text/event-stream"), "stream status")
    check(completion_text(events) == WANT, "the reference continuation, streamed: %r" % completion_text(events))
    check(done, "the stream ends with [DONE]")
    finishes = [e["choices"][0]["finish_reason"] for e in events if e.get("choices")]
    check(finishes[-1] == "length" and all(f is None for f in finishes[:-1]), "finish_reason: %r" % finishes)
    check(len(events) > 2 and not events[-1]["choices"] and events[-1]["usage"]["completion_tokens"] == 64,
          "a usage chunk last: %r" % events[-1:])
    check(len({e["id"] for e in events}) == 1, "one id in a stream")

    # The prompt as token ids (BOS included) gives the same text.
    status, _, r = post(srv, "/v1/completions", dict(body, prompt=REFS[PROMPT]["prompt_tokens"]))
    check(status == 200 and r["choices"][0]["text"] == WANT, "a prompt of token ids: %r" % r)
    # Another reference case through the other path.
    other = "The little cat was sad because"
    status, _, r = post(srv, "/completions", dict(body, prompt=other))
    check(status == 200 and r["choices"][0]["text"] == bytes.fromhex(REFS[other]["greedy_text_hex"]).decode(),
          "a second reference case: %r" % r)


def test_stop(srv):
    # Stop strings that begin in the middle of a token and span several.
    for stop in ["girl named L", ". She", "\n", "Lily"]:
        want = WANT[:WANT.index(stop)]
        body = {"prompt": PROMPT, "temperature": 0, "max_tokens": 64, "stop": [stop, "never appears"]}
        status, _, r = post(srv, "/v1/completions", body)
        check(status == 200 and r["choices"][0]["text"] == want and r["choices"][0]["finish_reason"] == "stop",
              "stop %r: %r" % (stop, r))
        status, _, events, done = stream(srv, "/v1/completions", dict(body, stream=True))
        check(completion_text(events) == want and events[-1]["choices"][0]["finish_reason"] == "stop" and done,
              "stop %r streamed: %r" % (stop, completion_text(events)))
    # A stop string that never comes: the whole continuation.
    status, _, r = post(srv, "/v1/completions", {"prompt": PROMPT, "temperature": 0, "max_tokens": 64,
                                                 "stop": "zzz"})
    check(r["choices"][0]["text"] == WANT and r["choices"][0]["finish_reason"] == "length", "no stop: %r" % r)


def test_chat(srv):
    msgs = [{"role": "system", "content": "You tell stories."}, {"role": "user", "content": "Hi"}]
    status, _, r = post(srv, "/apply-template", {"messages": msgs})
    check(status == 200 and r == {"prompt": "<|im_start|>system\nYou tell stories.<|im_end|>\n<|im_start|>user\n"
                                            "Hi<|im_end|>\n<|im_start|>assistant\n"}, "apply-template: %r" % r)
    body = {"messages": msgs, "temperature": 0, "max_tokens": 16, "seed": 1}
    status, headers, r = post(srv, "/v1/chat/completions", body)
    check(status == 200 and r["object"] == "chat.completion" and r["id"].startswith("chatcmpl-"), "chat: %r" % r)
    if status != 200:
        return
    msg = r["choices"][0]["message"]
    check(msg["role"] == "assistant" and isinstance(msg["content"], str) and msg["content"],
          "an assistant message: %r" % msg)
    check(r["choices"][0]["finish_reason"] in ("stop", "length") and r["usage"]["completion_tokens"] <= 16,
          "chat finish and usage: %r" % r)
    status, _, events, done = stream(srv, "/v1/chat/completions", dict(body, stream=True,
                                                                       stream_options={"include_usage": True}))
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    check(status == 200 and done and deltas[0] == {"role": "assistant", "content": ""}, "role first: %r" % deltas[:1])
    text = "".join(d.get("content", "") for d in deltas)
    check(text == msg["content"], "chat streamed = not streamed: %r %r" % (text, msg["content"]))
    check(events[-2]["choices"][0]["finish_reason"] == r["choices"][0]["finish_reason"] and
          events[-1]["usage"] == r["usage"], "chat stream end: %r" % events[-2:])
    check(all(e["object"] == "chat.completion.chunk" for e in events), "chunk objects")


def test_endpoints(srv):
    status, _, r = request(srv, "GET", "/health", key=None)
    check(status == 200 and json.loads(r) == {"status": "ok"}, "health: %r %r" % (status, r))
    status, _, r = request(srv, "GET", "/v1/models", key=None)
    r = json.loads(r)
    check(status == 200 and r["object"] == "list" and r["data"][0]["id"] == "stories260K", "models: %r" % r)
    status, _, r = post(srv, "/tokenize", {"content": PROMPT, "add_special": True})
    check(status == 200 and r == {"tokens": REFS[PROMPT]["prompt_tokens"]}, "tokenize: %r" % r)
    status, _, r = post(srv, "/tokenize", {"content": PROMPT})
    ids = r.get("tokens", [])
    check(status == 200 and ids == REFS[PROMPT]["prompt_tokens"][1:], "tokenize without BOS: %r" % r)
    status, _, r = post(srv, "/detokenize", {"tokens": ids})
    check(status == 200 and r["content"].strip() == PROMPT, "detokenize: %r" % r)


def parse_prometheus(text):
    """Samples {name: value} of a text exposition; raises on a bad line."""
    samples, types = {}, {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            m = re.match(r"# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$", line)
            if not m:
                raise ValueError("bad comment line %r" % line)
            if m.group(1) == "TYPE":
                if m.group(3) not in ("counter", "gauge", "histogram", "summary", "untyped"):
                    raise ValueError("bad type %r" % line)
                types[m.group(2)] = m.group(3)
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)( \d+)?$", line)
        if not m:
            raise ValueError("bad sample line %r" % line)
        samples[m.group(1)] = float(m.group(3))
    for name in samples:
        if name not in types:
            raise ValueError("%s has no TYPE" % name)
    return samples


def test_metrics(srv):
    status, headers, r = request(srv, "GET", "/metrics")
    check(status == 200 and headers.get("content-type", "").startswith("text/plain"), "metrics status")
    try:
        m = parse_prometheus(r.decode())
    except ValueError as e:
        check(False, "metrics parse: %s" % e)
        return
    for name in ["llamacpp:prompt_tokens_total", "llamacpp:prompt_seconds_total", "llamacpp:tokens_predicted_total",
                 "llamacpp:tokens_predicted_seconds_total", "llamacpp:n_decode_total",
                 "llamacpp:n_busy_slots_per_decode", "llamacpp:prompt_tokens_seconds",
                 "llamacpp:predicted_tokens_seconds", "llamacpp:kv_cache_usage_ratio", "llamacpp:kv_cache_tokens",
                 "llamacpp:requests_processing", "llamacpp:requests_deferred", "sluice_bytes_streamed_total",
                 "sluice_cache_hit_ratio", "sluice_slot_occupancy_ratio", "sluice_restarts_total",
                 "sluice_cancelled_requests_total", "sluice_fallback_requests_total"]:
        check(name in m, "metric %s" % name)
    check(m.get("llamacpp:tokens_predicted_total", 0) >= 64 and m.get("llamacpp:prompt_tokens_total", 0) >= 5,
          "token counters count: %r" % m)
    check(m.get("sluice_coordinator_up") == 1 and m.get("sluice_workers") == 1, "coordinator state: %r" % m)
    return m


def test_errors(srv):
    C = "/v1/completions"
    cases = [
        (b'{"prompt": "x",', 400, "invalid_json", None),
        (b'{"prompt": "x"} trailing', 400, "invalid_json", None),
        (b'"just a string"', 400, "invalid_type", None),
        (b'{"prompt": "x", "max_tokens": "64"}', 400, "invalid_type", "max_tokens"),
        (b'{"prompt": "x", "temperature": "hot"}', 400, "invalid_type", "temperature"),
        (b'{"prompt": "x", "stream": "yes"}', 400, "invalid_type", "stream"),
        (b'{"prompt": 42}', 400, "invalid_type", "prompt"),
        (b'{"prompt": "x", "top_p": 7}', 400, "invalid_value", "top_p"),
        (b'{"prompt": "x", "n": 3}', 400, "unsupported_value", "n"),
        (b'{"prompt": "x", "frobnicate": true}', 400, "unknown_parameter", "frobnicate"),
        (b'{}', 400, "missing_required_parameter", "prompt"),
        (b'{"prompt": [1, 99999]}', 400, "invalid_value", "prompt"),
        (json.dumps({"prompt": "word " * 3000}).encode(), 400, "context_length_exceeded", "prompt"),
    ]
    for raw, want, code, param in cases:
        status, _, body = request(srv, "POST", C, raw=raw)
        body = json.loads(body)
        check(is_error(status, body, want, code, param), "%r: %r %r" % (raw[:60], status, body))
    status, _, body = post(srv, "/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]})
    check(is_error(status, body, 400, "invalid_type", "messages.content"), "chat wrong type: %r" % body)
    # Over --max-body (64K): refused whole, with Content-Length and chunked.
    big = json.dumps({"prompt": "x" * 100000}).encode()
    status, _, body = request(srv, "POST", C, raw=big)
    check(is_error(status, json.loads(body), 413, "request_too_large"), "oversized body: %r" % status)
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    c.putrequest("POST", C)
    c.putheader("Authorization", "Bearer " + KEY)
    c.putheader("Transfer-Encoding", "chunked")
    c.endheaders()
    for i in range(0, len(big), 8192):
        part = big[i:i + 8192]
        c.send(b"%x\r\n%s\r\n" % (len(part), part))
    c.send(b"0\r\n\r\n")
    r = c.getresponse()
    check(is_error(r.status, json.loads(r.read()), 413), "oversized chunked body: %r" % r.status)
    c.close()
    # Keys.
    status, _, body = post(srv, C, {"prompt": "x"}, key=None)
    check(is_error(status, body, 401, "invalid_api_key"), "no key: %r" % body)
    status, _, body = post(srv, C, {"prompt": "x"}, key="wrong")
    check(is_error(status, body, 401, "invalid_api_key"), "wrong key: %r" % body)
    status, _, body = request(srv, "GET", "/metrics", key="wrong")
    check(status == 401, "metrics need the key")
    # URLs and methods.
    status, _, body = request(srv, "GET", "/v1/nothing")
    check(is_error(status, json.loads(body), 404, "unknown_url"), "unknown URL: %r" % body)
    status, _, body = request(srv, "GET", "/v1/completions")
    check(is_error(status, json.loads(body), 405), "wrong method: %r" % body)
    status, _, body = post(srv, "/tokenize", {"content": "x", "extra": 1})
    check(is_error(status, body, 400, "unknown_parameter", "extra"), "tokenize unknown field: %r" % body)
    status, _, body = post(srv, "/detokenize", {"tokens": "1 2"})
    check(is_error(status, body, 400), "detokenize wrong type: %r" % body)
    # Still serving.
    status, _, r = post(srv, C, {"prompt": PROMPT, "temperature": 0, "max_tokens": 64})
    check(status == 200 and r["choices"][0]["text"] == WANT, "serving after the errors")


def test_concurrent(srv):
    """Six requests at once on two sessions: four wait in the queue; each
    gets its own reference continuation."""
    prompts = list(REFS) * 2
    results = [None] * len(prompts)

    def one(i):
        body = {"prompt": prompts[i], "temperature": 0, "max_tokens": 64, "stream": i % 2 == 1}
        if body["stream"]:
            status, _, events, _ = stream(srv, "/v1/completions", body)
            results[i] = completion_text(events)
        else:
            status, _, r = post(srv, "/v1/completions", body)
            results[i] = r["choices"][0]["text"] if status == 200 else r

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for p, got in zip(prompts, results):
        check(got == bytes.fromhex(REFS[p]["greedy_text_hex"]).decode(), "concurrent %r: %r" % (p, got))


def metric(srv, name):
    return parse_prometheus(request(srv, "GET", "/metrics")[2].decode()).get(name)


def long_stream(srv, key=KEY, wait=True):
    """A raw connection streaming a long generation; returned once its
    first event came (wait) or once the request is sent."""
    s = socket.create_connection(("127.0.0.1", srv.port))
    body = json.dumps({"prompt": PROMPT, "max_tokens": 2000, "temperature": 0, "stream": True}).encode()
    auth = b"Authorization: Bearer %s\r\n" % key.encode() if key else b""
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (auth, len(body), body))
    got = b""
    while wait and b"data: " not in got:
        got += s.recv(4096)
    return s


class paused_compute:
    """The server's compute workers stopped (SIGSTOP) for the block: the
    sessions it holds stay busy for as long as a test needs, whatever the
    model's speed. Well under the coordinator's hang timeout."""

    def __init__(self, srv):
        self.pids = []
        for pid in os.listdir("/proc"):
            try:
                with open("/proc/%s/stat" % pid) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    exe = f.read().split(b"\0")[0]
            except (OSError, ValueError, IndexError):
                continue
            if ppid == srv.p.pid and exe.endswith(b"/sluice-compute"):
                self.pids.append(int(pid))
        assert self.pids, "no compute worker under %d" % srv.p.pid

    def __enter__(self):
        for pid in self.pids:
            os.kill(pid, signal.SIGSTOP)

    def __exit__(self, *exc):
        for pid in self.pids:
            os.kill(pid, signal.SIGCONT)


def wait_metric(srv, name, want, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and metric(srv, name) != want:
        time.sleep(0.05)
    return metric(srv, name) == want


def test_queued_client_leaves(srv):
    """Both sessions busy: a third request waits in the queue; when its
    client leaves it is dropped from the queue without ever starting, and
    the gateway serves on."""
    cancelled = metric(srv, "sluice_cancelled_requests_total")
    with paused_compute(srv):
        busy = [long_stream(srv, wait=False), long_stream(srv, wait=False)]
        check(wait_metric(srv, "llamacpp:requests_processing", 2), "two requests take the two sessions")
        queued = long_stream(srv, wait=False)
        check(wait_metric(srv, "llamacpp:requests_deferred", 1), "the third request waits for a session")
        queued.close()
        check(wait_metric(srv, "llamacpp:requests_deferred", 0), "a waiting client that leaves is dropped")
        check(metric(srv, "llamacpp:requests_processing") == 2, "the two generations go on")
        for b in busy:
            b.close()
    check(wait_metric(srv, "llamacpp:requests_processing", 0), "the sessions are given back")
    check(metric(srv, "sluice_cancelled_requests_total") == cancelled + 2, "only the two started ones were cancelled")
    status, _, r = post(srv, "/v1/completions", {"prompt": PROMPT, "temperature": 0, "max_tokens": 64})
    check(status == 200 and r["choices"][0]["text"] == WANT, "serving after a queued client left")


def test_disconnect(srv):
    """A client that leaves mid-stream stops its generation: the gateway
    cancels it (counted) and the session is free again."""
    before = metric(srv, "sluice_cancelled_requests_total")
    predicted = metric(srv, "llamacpp:tokens_predicted_total")
    s = long_stream(srv)
    s.close()
    check(wait_metric(srv, "sluice_cancelled_requests_total", before + 1), "the disconnect cancelled the generation")
    check(wait_metric(srv, "llamacpp:requests_processing", 0), "the session is given back")
    check(metric(srv, "llamacpp:tokens_predicted_total") == predicted, "a cancelled request is not counted done")
    status, _, r = post(srv, "/v1/completions", {"prompt": PROMPT, "temperature": 0, "max_tokens": 64})
    check(status == 200 and r["choices"][0]["text"] == WANT, "serving after a disconnect")


def test_curl(srv):
    if not shutil.which("curl"):
        print("test_gateway: curl is not installed; skipping the curl checks", file=sys.stderr)
        return
    url = "http://127.0.0.1:%d/v1/completions" % srv.port
    auth = ["-H", "Authorization: Bearer " + KEY, "-H", "Content-Type: application/json"]
    body = {"prompt": PROMPT, "temperature": 0, "max_tokens": 64}
    p = subprocess.run(["curl", "-sS", "--fail", *auth, "-d", json.dumps(body), url], capture_output=True,
                       timeout=60)
    check(p.returncode == 0 and json.loads(p.stdout)["choices"][0]["text"] == WANT, "curl: %r" % p.stderr)
    p = subprocess.run(["curl", "-sS", "-N", *auth, "-d", json.dumps(dict(body, stream=True)), url],
                       capture_output=True, timeout=60)
    lines = [l[6:] for l in p.stdout.decode().split("\n") if l.startswith("data: ")]
    text = "".join(json.loads(l)["choices"][0]["text"] for l in lines[:-1])
    check(p.returncode == 0 and text == WANT and lines[-1] == "[DONE]", "curl streamed: %r" % lines[-2:])
    p = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", *auth, "-d", "{nope", url],
                       capture_output=True, timeout=60)
    check(p.stdout == b"400", "curl, malformed JSON: %r" % p.stdout)
    # curl sends "Expect: 100-continue" for big bodies: refused before it sends.
    big = json.dumps({"prompt": "x" * 2000000})
    p = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", *auth, "--data-binary", "@-", url],
                       input=big.encode(), capture_output=True, timeout=60)
    check(p.stdout == b"413", "curl, oversized body: %r %r" % (p.stdout, p.stderr))


def test_loading():
    """A gateway whose coordinator does not answer: /health says 503 in
    OpenAI's shape, completions too, and the rest keeps working."""
    d = "/tmp/sluice-gw-nobody-%d" % os.getpid()
    srv = Server(cmd=[os.path.join(BIN, "sluice-gateway"), "--connect", "ipc://%s/client" % d, "-m", MODEL,
                      "--port", "0"])
    try:
        status, _, body = request(srv, "GET", "/health")
        check(is_error(status, json.loads(body), 503), "health while loading: %r %r" % (status, body))
        status, _, body = post(srv, "/v1/completions", {"prompt": "x"})
        check(is_error(status, body, 503), "completion while loading: %r" % body)
        status, _, body = request(srv, "GET", "/v1/models")
        check(status == 200, "models while loading")
    finally:
        check(srv.stop() == 0, "the gateway stops cleanly on SIGTERM")


def test_fallback():
    remote = Server("--api-key", "remote-key", "--chat-template", "chatml")
    router = Server("--fallback-url", "http://127.0.0.1:%d/v1" % remote.port, "--fallback-key", "remote-key",
                    "--max-local-seconds", "0")
    try:
        check(remote.wait_ready() and router.wait_ready(), "the gateways come up")
        body = {"prompt": PROMPT, "temperature": 0, "max_tokens": 64}
        # The time estimate is over 0 s: forwarded, whole and streamed.
        status, headers, r = post(router, "/v1/completions", body, key=None)
        check(status == 200 and headers.get("x-sluice-served-by") == "fallback" and r["choices"][0]["text"] == WANT,
              "forwarded for time: %r %r" % (headers.get("x-sluice-served-by"), r))
        status, headers, events, done = stream(router, "/v1/completions", dict(body, stream=True), key=None)
        check(headers.get("x-sluice-served-by") == "fallback" and completion_text(events) == WANT and done,
              "forwarded streamed: %r" % completion_text(events))
        # A model that is not local.
        status, headers, r = post(router, "/v1/chat/completions",
                                  {"model": "some-other-model", "max_tokens": 8, "messages": [
                                      {"role": "user", "content": "Hi"}]}, key=None)
        check(status == 200 and headers.get("x-sluice-served-by") == "fallback" and
              r["choices"][0]["message"]["role"] == "assistant", "forwarded for the model: %r %r" % (status, r))
        status, headers, r = post(router, "/v1/completions", dict(body, model="some-other-model"), key=None)
        check(status == 200 and headers.get("x-sluice-served-by") == "fallback" and r["choices"][0]["text"] == WANT,
              "forwarded completion for the model: %r" % r)
        m = parse_prometheus(request(remote, "GET", "/metrics", key="remote-key")[2].decode())
        check(m["llamacpp:tokens_predicted_total"] >= 3 * 64, "the remote generated them: %r" % m)
        check(metric(router, "sluice_fallback_requests_total") == 4 and
              metric(router, "llamacpp:tokens_predicted_total") == 0, "the router did not")
        # The queue: one session, busy; with --max-queue 0 nothing may wait for
        # it, so a request is forwarded, and served here once the session is free.
        one = Server("--parallel", "1", "--max-queue", "0", "--fallback-url",
                     "http://127.0.0.1:%d/v1" % remote.port, "--fallback-key", "remote-key")
        try:
            check(one.wait_ready(), "a one-session gateway comes up")
            with paused_compute(one):
                busy = long_stream(one, key=None, wait=False)
                check(wait_metric(one, "llamacpp:requests_processing", 1), "a request takes the session")
                status, headers, r = post(one, "/v1/completions", body, key=None)
                check(status == 200 and headers.get("x-sluice-served-by") == "fallback" and
                      r["choices"][0]["text"] == WANT, "forwarded for the queue: %r %r" % (headers, r))
                busy.close()
            check(wait_metric(one, "llamacpp:requests_processing", 0), "its session is given back")
            status, headers, r = post(one, "/v1/completions", body, key=None)
            check(status == 200 and headers.get("x-sluice-served-by") == "local" and
                  r["choices"][0]["text"] == WANT, "served here when the session is free: %r %r" % (headers, r))
        finally:
            one.stop()
        # Without the fallback: local requests are served here, others fail.
        remote.stop()
        status, headers, r = post(router, "/v1/completions", body, key=None)
        check(status == 200 and headers.get("x-sluice-served-by") == "local" and r["choices"][0]["text"] == WANT,
              "served locally when the fallback is gone: %r %r" % (status, r))
        status, headers, r = post(router, "/v1/completions", dict(body, model="some-other-model"), key=None)
        check(is_error(status, r, 502, "fallback_unavailable"), "another model, no fallback: %r" % r)
    finally:
        router.stop()
        remote.stop()


def main():
    test_loading()
    srv = Server("--parallel", "2", "--chat-template", "chatml", "--api-key", KEY, "--max-body", "64K")
    try:
        check(srv.wait_ready(), "the gateway becomes ready: %r" % srv.err)
        test_endpoints(srv)
        test_reference(srv)
        test_stop(srv)
        test_chat(srv)
        test_errors(srv)
        test_concurrent(srv)
        test_disconnect(srv)
        test_queued_client_leaves(srv)
        test_curl(srv)
        test_metrics(srv)
    finally:
        check(srv.stop() == 0, "sluice serve stops cleanly on SIGTERM")
    test_fallback()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
