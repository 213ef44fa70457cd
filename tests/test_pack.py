#!/usr/bin/env python3
"""End-to-end tests of packed models (`sluice pack`, model/pack.h) through
the real processes:

- stories260K and tiny-llama-q4_k_m, packed uncompressed, with LZ4 and with
  zstd, give byte-identical greedy text to their GGUF with `sluice generate`
  and through the pipeline (`sluice run`) with a budget that streams every
  unit, with 1 and 2 loaders, and with everything pinned;
- a flipped byte in a streamed shard, in a pinned one and in the shard of
  the token embedding (read by compute workers), a truncated shard and an
  edited manifest are each reported with the shard's (or manifest's) name
  and a non-zero exit, by `sluice run`, `generate` and `info`, and no text
  is produced from the corrupted unit;
- `sluice pack --quant g4` gives the same text as `sluice quantize --type g4`
  followed by running that GGUF, in-process and through the pipeline, and
  leaves no temporary file;
- bad `sluice pack` input (a bad --compress or --quant, a non-empty output
  directory, a missing model) is refused with a message.

(In-process packing of every reference model with each codec, and the
corruption cases at the API level, are in test_pack.c.)

usage: test_pack.py BUILD_BIN_DIR TESTDATA_DIR
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

from sltest import crashed

BIN, TESTDATA = sys.argv[1], sys.argv[2]
SLUICE = os.path.join(BIN, "sluice")
MODELS = os.path.join(TESTDATA, "models")
PROMPT = "Once upon a time"
N = 24
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what, file=sys.stderr)


def gguf(name):
    return os.path.join(MODELS, name + ".gguf")


def sluice(*args, timeout=120):
    return subprocess.run([SLUICE, *args], capture_output=True, timeout=timeout)


def generate(model):
    return sluice("generate", "-m", model, "-p", PROMPT, "-n", str(N), "--temp", "0", "-t", "2")


def run(model, *args):
    return sluice("run", "-m", model, "-p", PROMPT, "-n", str(N), "--temp", "0", "-t", "2", *args, timeout=180)


def minimum_budget(model):
    p = run(model, "--mem-budget", "4K")
    m = re.search(rb"minimum is (\d+) bytes", p.stderr)
    check(p.returncode == 1 and m is not None, "%s: a 4K budget is refused with the minimum: %r" % (model, p.stderr))
    return m.group(1).decode() if m else None


def pack(name, out, codec):
    p = sluice("pack", "-m", gguf(name), "-o", out, "--compress", codec)
    check(p.returncode == 0 and b"packed" in p.stdout, "pack %s %s: %r" % (name, codec, p.stderr[-300:]))
    return p.returncode == 0


def test_identical_output(work):
    for name in ("stories260K", "tiny-llama-q4_k_m"):
        want = generate(gguf(name))
        check(want.returncode == 0 and len(want.stdout) > N // 2, "%s: in-process output" % name)
        low = minimum_budget(gguf(name))
        for codec in ("none", "lz4", "zstd"):
            d = os.path.join(work, "%s.%s" % (name, codec))
            if not pack(name, d, codec):
                continue
            what = "%s packed with %s" % (name, codec)
            p = generate(d)
            check(p.returncode == 0 and p.stdout == want.stdout, "%s: generate differs: %r" % (what, p.stdout))
            info = sluice("info", "-m", d)
            check(info.returncode == 0 and b"packed from" in info.stdout and b"runs as" in info.stdout,
                  "%s: info: %r" % (what, info.stdout + info.stderr))
            # The packed model plans like its GGUF: the same minimum budget.
            if codec == "none":
                check(minimum_budget(d) == low, "%s: the minimum budget is the GGUF's" % what)
            for loaders in ((1, 2) if codec == "none" else (2,)):
                p = run(d, "--mem-budget", low, "--loaders", str(loaders))
                check(p.returncode == 0 and p.stdout == want.stdout,
                      "%s, %d loaders, streaming: exit %d, %r vs %r: %r" %
                      (what, loaders, p.returncode, p.stdout, want.stdout, p.stderr[-400:]))
                check(re.search(rb"streamed [1-9][0-9.]* MiB per step", p.stderr) is not None,
                      "%s: the minimum budget streams" % what)
                check(b"loaders' CPU time" in p.stderr, "%s: loader CPU time is reported" % what)
            if codec == "none":
                p = run(d)
                check(p.returncode == 0 and p.stdout == want.stdout, "%s, all pinned: %r" % (what, p.stderr[-400:]))
            else:
                shutil.rmtree(d)


def test_requant(work):
    q = os.path.join(work, "q4.gguf")
    p = sluice("quantize", "-m", gguf("tiny-llama-f32"), "-o", q, "--type", "g4")
    check(p.returncode == 0, "quantize: %r" % p.stderr[-300:])
    want = generate(q)
    d = os.path.join(work, "packed-g4")
    p = sluice("pack", "-m", gguf("tiny-llama-f32"), "-o", d, "--quant", "g4", "--compress", "zstd")
    check(p.returncode == 0 and b"re-quantized to g4/128" in p.stdout, "pack --quant g4: %r" % p.stderr[-300:])
    check(not any("requant" in x for x in os.listdir(work)), "no temporary file is left: %r" % os.listdir(work))
    info = sluice("info", "-m", d)
    check(b"G4_128" in info.stdout and b"re-quantized g4/128" in info.stdout, "info of the re-quantized pack")
    p = generate(d)
    check(want.returncode == 0 and p.stdout == want.stdout, "pack --quant g4 vs quantize: %r vs %r" %
          (p.stdout, want.stdout))
    low = minimum_budget(d)
    p = run(d, "--mem-budget", low)
    check(p.returncode == 0 and p.stdout == want.stdout, "the re-quantized pack through the pipeline: %r" %
          p.stderr[-300:])
    shutil.rmtree(d)
    os.unlink(q)


def flip(path, at):
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x40]))


def fresh_copy(src, dst):
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    return dst


def test_corruption(work):
    good = os.path.join(work, "stories260K.none")
    if not os.path.isdir(good):
        check(False, "the uncompressed pack of stories260K exists")
        return
    low = minimum_budget(gguf("stories260K"))
    bad = os.path.join(work, "bad")

    # A streamed unit: the request fails with the shard named; the text
    # stops short (nothing computed from the bad bytes).
    fresh_copy(good, bad)
    size = os.path.getsize(os.path.join(bad, "blk.2.shard"))
    flip(os.path.join(bad, "blk.2.shard"), size // 2)
    p = run(bad, "--mem-budget", low, "--loaders", "2")
    check(p.returncode != 0 and not crashed(p) and b"blk.2.shard" in p.stderr and b"corrupted" in p.stderr,
          "a corrupted streamed shard: exit %d, %r" % (p.returncode, p.stderr[-600:]))
    check(len(p.stdout.strip()) == 0, "no text from a pipeline whose layer 2 is corrupted: %r" % p.stdout)
    # Pinned (no budget): the coordinator refuses to start, naming it.
    p = run(bad)
    check(p.returncode == 1 and b"blk.2.shard" in p.stderr, "a corrupted pinned shard: %r" % p.stderr[-600:])
    p = generate(bad)
    check(p.returncode == 1 and not crashed(p) and b"blk.2.shard" in p.stderr and b"corrupted" in p.stderr,
          "generate on a corrupted shard: %r" % p.stderr[-400:])
    # info reads the metadata only: it still describes the model.
    p = sluice("info", "-m", bad)
    check(p.returncode == 0, "info does not read the weights: %r" % p.stderr[-300:])

    # The token embedding (globals.shard), which compute workers load.
    fresh_copy(good, bad)
    flip(os.path.join(bad, "globals.shard"), 1000)
    p = run(bad, "--mem-budget", low)
    check(p.returncode != 0 and not crashed(p) and b"globals.shard" in p.stderr,
          "a corrupted embedding shard: exit %d, %r" % (p.returncode, p.stderr[-600:]))

    # A truncated shard.
    fresh_copy(good, bad)
    path = os.path.join(bad, "blk.1.shard")
    os.truncate(path, os.path.getsize(path) - 100)
    for p in (run(bad, "--mem-budget", low), generate(bad), sluice("info", "-m", bad)):
        check(p.returncode == 1 and not crashed(p) and b"blk.1.shard" in p.stderr and b"truncated" in p.stderr,
              "a truncated shard: exit %d, %r" % (p.returncode, p.stderr[-400:]))

    # An edited manifest.
    fresh_copy(good, bad)
    path = os.path.join(bad, "manifest.slpk")
    with open(path, "rb") as f:
        data = f.read()
    at = data.find(b"\xa4head")
    check(at > 0, "the manifest names the head unit")
    flip(path, at + 2)
    for p in (run(bad, "--mem-budget", low), generate(bad), sluice("info", "-m", bad)):
        check(p.returncode == 1 and not crashed(p) and b"manifest" in p.stderr and b"checksum" in p.stderr,
              "an edited manifest: exit %d, %r" % (p.returncode, p.stderr[-400:]))
    shutil.rmtree(bad)


def test_bad_input(work):
    p = sluice("pack", "-m", gguf("stories260K"), "-o", os.path.join(work, "x"), "--compress", "gzip")
    check(p.returncode == 2 and b"--compress" in p.stderr, "a bad codec: %r" % p.stderr)
    p = sluice("pack", "-m", gguf("stories260K"), "-o", os.path.join(work, "x"), "--compress", "zstd:99")
    check(p.returncode == 2, "a bad zstd level: %r" % p.stderr)
    p = sluice("pack", "-m", gguf("stories260K"))
    check(p.returncode == 2, "no output directory: %r" % p.stderr)
    p = sluice("pack", "-m", gguf("stories260K"), "-o", os.path.join(work, "x"), "--quant", "q4")
    check(p.returncode == 2 and b"--quant" in p.stderr, "a bad --quant: %r" % p.stderr)
    p = sluice("pack", "-m", gguf("stories260K"), "-o", os.path.join(work, "x"), "--group", "64")
    check(p.returncode == 2 and b"--group" in p.stderr, "--group without --quant: %r" % p.stderr)
    os.makedirs(os.path.join(work, "full"))
    open(os.path.join(work, "full", "keep"), "w").close()
    p = sluice("pack", "-m", gguf("stories260K"), "-o", os.path.join(work, "full"))
    check(p.returncode == 1 and b"not an empty directory" in p.stderr, "a non-empty directory: %r" % p.stderr)
    check(os.listdir(os.path.join(work, "full")) == ["keep"], "a refused pack touches nothing")
    p = sluice("pack", "-m", os.path.join(work, "missing.gguf"), "-o", os.path.join(work, "y"))
    check(p.returncode == 1 and not os.path.exists(os.path.join(work, "y")), "a missing model: %r" % p.stderr)
    p = sluice("pack", "-m", os.path.join(TESTDATA, "tokenizer", "ggml-vocab-gpt-2.gguf"), "-o",
               os.path.join(work, "z"))
    check(p.returncode == 1 and not crashed(p) and not os.path.exists(os.path.join(work, "z")),
          "a vocabulary-only file cannot be packed: %r" % p.stderr)
    p = sluice("generate", "-m", work, "-p", "x")
    check(p.returncode == 1 and b"manifest" in p.stderr, "a directory without a manifest: %r" % p.stderr)


def main():
    with tempfile.TemporaryDirectory(prefix="sluice-pack-") as work:
        test_bad_input(work)
        test_identical_output(work)
        test_corruption(work)
        test_requant(work)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
