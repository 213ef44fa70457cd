#!/usr/bin/env python3
"""End-to-end tests of the `sluice` command-line tool: the reference story,
tokenize/logits against the reference data, and bad input (malformed GGUF
files, bad flags) giving a message and a non-zero exit, never a crash.

usage: test_cli.py SLUICE_BINARY TESTDATA_DIR
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

from sltest import crashed

SLUICE, TESTDATA = sys.argv[1], sys.argv[2]
MODELS = os.path.join(TESTDATA, "models")
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what, file=sys.stderr)


def run(*args, timeout=300):
    return subprocess.run([SLUICE, *args], capture_output=True, timeout=timeout)


def ref(name):
    with open(os.path.join(TESTDATA, "refs", name + ".ref.json")) as f:
        return json.load(f)


def test_reference_story():
    r = ref("stories260K")
    case = r["cases"][0]
    p = run("generate", "-m", os.path.join(MODELS, "stories260K.gguf"), "-p", case["prompt"], "-n", "64",
            "--temp", "0", "-t", "2")
    check(p.returncode == 0, "generate exits 0: %r" % p.stderr[-300:])
    want = bytes.fromhex(case["greedy_text_hex"])
    got = p.stdout[:-1] if p.stdout.endswith(b"\n") else p.stdout
    check(got == want, "stories260K greedy story: got %r, want %r" % (got[:120], want[:120]))
    check(b"tokens/s" in p.stderr, "generate reports speed on stderr")


def test_tokenize_and_logits():
    for name in ("stories260K", "tiny-qwen2-q4_k_m"):
        r = ref(name)
        model = os.path.join(MODELS, name + ".gguf")
        case = r["cases"][0]
        p = run("tokenize", "-m", model, "--text", case["prompt"], "--json")
        check(p.returncode == 0 and json.loads(p.stdout) == case["prompt_tokens"],
              "%s tokenize --json matches prompt_tokens: %r" % (name, p.stdout[:200]))
        toks = case["prompt_tokens"] + [s["token"] for s in case["steps"][:3]]
        p = run("logits", "-m", model, "--tokens", ",".join(map(str, toks)), "--top", "3", "-t", "2")
        check(p.returncode == 0, "%s logits exits 0: %r" % (name, p.stderr[-300:]))
        if p.returncode == 0:
            rows = json.loads(p.stdout)
            check(len(rows) == len(toks) and all(len(row) == 3 for row in rows), "%s logits shape" % name)
            n = len(case["prompt_tokens"])
            for i in range(3):
                check(rows[n - 1 + i][0][0] == case["steps"][i]["token"],
                      "%s argmax at step %d is the reference token" % (name, i))
    p = run("logits", "-m", os.path.join(MODELS, "stories260K.gguf"), "--tokens", "1,2")
    rows = json.loads(p.stdout) if p.returncode == 0 else []
    check(len(rows) == 2 and all(len(row) == 512 for row in rows), "full logits have n_vocab values per position")


def test_info():
    for f in sorted(os.listdir(MODELS)):
        if not f.endswith(".gguf"):
            continue
        p = run("info", "-m", os.path.join(MODELS, f))
        if f.startswith("tiny-moe"):
            check(p.returncode == 0 and b"8 per layer, 2 used per token" in p.stdout,
                  "info describes the MoE model's experts: %r" % p.stdout[-300:])
        else:
            check(p.returncode == 0 and b"per layer" in p.stdout, "info %s: %r" % (f, p.stderr[-200:]))


def test_help_and_usage():
    for cmd in ("info", "tokenize", "logits", "generate"):
        p = run(cmd, "--help")
        check(p.returncode == 0 and b"usage" in p.stdout, "%s --help" % cmd)
        p = run(cmd, "--no-such-flag")
        check(p.returncode == 2, "%s rejects an unknown flag" % cmd)
    check(run().returncode == 2, "no command is a usage error")
    check(run("frobnicate").returncode == 2, "unknown command is a usage error")
    model = os.path.join(MODELS, "stories260K.gguf")
    for args in (["-n", "-3"], ["-n", "abc"], ["--temp", "nan"], ["--top-p", "2"], ["-c", "4"], ["-t", "0"]):
        p = run("generate", "-m", model, "-p", "hi", *args)
        check(p.returncode == 2 and p.stderr, "generate %s is a usage error with a message" % args)
    p = run("logits", "-m", model, "--tokens", "1,99999")
    check(p.returncode == 1 and p.stderr and not crashed(p), "logits with a token outside the vocabulary")
    p = run("logits", "-m", model, "--tokens", "1,,2")
    check(p.returncode == 2, "logits with a malformed token list")


def test_malformed_files():
    with open(os.path.join(MODELS, "stories260K.gguf"), "rb") as f:
        good = f.read()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bad.gguf")

        def try_file(data, what, cmds=("info", "generate")):
            with open(path, "wb") as f:
                f.write(data)
            for cmd in cmds:
                args = ["-m", path] + (["-p", "x", "-n", "2"] if cmd == "generate" else [])
                p = run(cmd, *args)
                check(p.returncode == 1 and b"sluice" in p.stderr and not crashed(p),
                      "%s on %s: rc %d, stderr %r" % (cmd, what, p.returncode, p.stderr[-200:]))

        # Truncations throughout the header and at some points in the data.
        cuts = list(range(0, 64, 3)) + list(range(64, 14176, 397)) + [14176, 200000, len(good) - 1]
        for cut in cuts:
            try_file(good[:cut], "truncated at %d" % cut, cmds=("info",))
        try_file(b"GGUX" + good[4:], "wrong magic")
        for v in (1, 4, 0x03000000):
            try_file(good[:4] + struct.pack("<I", v) + good[8:], "version %d" % v)
        try_file(good[:8] + struct.pack("<Q", 1 << 62) + good[16:], "absurd tensor count")
        try_file(good[:16] + struct.pack("<Q", 1 << 62) + good[24:], "absurd metadata count")
        try_file(good[:24] + struct.pack("<Q", 1 << 60) + good[32:], "absurd key length")
        # The first tensor info: find its name and corrupt n_dims / type / offset.
        at = good.index(b"token_embd.weight") + len(b"token_embd.weight")
        try_file(good[:at] + struct.pack("<I", 9) + good[at + 4:], "n_dims 9")
        try_file(good[:at + 4] + struct.pack("<Q", 1 << 62) + good[at + 12:], "huge dimension")
        try_file(good[:at + 20] + struct.pack("<I", 77) + good[at + 24:], "unknown tensor type")
        try_file(good[:at + 24] + struct.pack("<Q", 1 << 40) + good[at + 32:], "tensor beyond end of file")
        try_file(good[:at + 24] + struct.pack("<Q", 3) + good[at + 32:], "misaligned tensor")
        try_file(b"", "empty file")
        p = run("info", "-m", os.path.join(d, "missing.gguf"))
        check(p.returncode == 1 and b"cannot open" in p.stderr, "missing file")
        p = run("info", "-m", d)
        check(p.returncode == 1 and p.stderr, "a directory")


for t in (test_help_and_usage, test_info, test_malformed_files, test_tokenize_and_logits, test_reference_story):
    t()
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
