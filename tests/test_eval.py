#!/usr/bin/env python3
"""`sluice quantize` and `sluice eval` end to end.

stories260K (the real trained model, F32) is quantized into a temporary
directory to sluice's low-bit types and to GGUF types; `sluice eval` then
compares every result with the F32 model on a small prompts file. Checks:
the F32 model against itself has KL exactly 0 and full top-1 agreement (the
evaluation is deterministic and the KL is computed the same way on both
sides); fewer bits give a larger KL (g2 > g3 > g4 > q8_0 > 0); the values
are finite and in range for the GGUF types and for the reference
toolchain's own K-quant files (tiny-llama-q2_k/q4_k/q6_k against
tiny-llama-f32, which also rank by bits). The files written carry the
sluice-private type ids of compute/lowbit.h, and bad input gets a message
and a non-zero exit.

usage: test_eval.py SLUICE_BINARY TESTDATA_DIR PROMPTS_FILE
"""
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

from sltest import crashed

SLUICE, TESTDATA, PROMPTS = sys.argv[1], sys.argv[2], sys.argv[3]
MODELS = os.path.join(TESTDATA, "models")
STORIES = os.path.join(MODELS, "stories260K.gguf")
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


def tensor_types(path):
    """{name: type id} from a GGUF file's tensor infos (GGUF v3 layout)."""
    with open(path, "rb") as f:
        data = f.read()
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    at = 24

    def skip_value(t, at):
        sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
        if t == 8:
            (n,) = struct.unpack_from("<Q", data, at)
            return at + 8 + n
        if t == 9:
            et, count = struct.unpack_from("<IQ", data, at)
            at += 12
            for _ in range(count):
                at = skip_value(et, at)
            return at
        return at + sizes[t]

    for _ in range(n_kv):
        (klen,) = struct.unpack_from("<Q", data, at)
        at += 8 + klen
        (t,) = struct.unpack_from("<I", data, at)
        at = skip_value(t, at + 4)
    types = {}
    for _ in range(n_tensors):
        (nlen,) = struct.unpack_from("<Q", data, at)
        name = data[at + 8:at + 8 + nlen].decode()
        at += 8 + nlen
        (n_dims,) = struct.unpack_from("<I", data, at)
        at += 4 + 8 * n_dims
        (t,) = struct.unpack_from("<I", data, at)
        at += 4 + 8
        types[name] = t
    return types


def evaluate(ref, models):
    p = run("eval", "--ref", ref, "--prompts", PROMPTS, "-t", "1", "--json", *sum((["-m", m] for m in models), []))
    check(p.returncode == 0 and not crashed(p), "eval exits 0: %r" % p.stderr[-400:])
    if p.returncode != 0:
        return None
    r = json.loads(p.stdout)
    check(len(r["models"]) == len(models) + 1 and r["positions"] > 100, "eval reports every model and the text")
    for m in r["models"]:
        ok = all(math.isfinite(m[k]) for k in ("bpw", "kl_mean", "kl_p99", "kl_max", "top1", "ppl"))
        check(ok and 0 <= m["top1"] <= 1 and m["kl_mean"] >= 0 and m["kl_p99"] <= m["kl_max"] and m["ppl"] > 1,
              "sane values for %s: %r" % (m["path"], m))
    return {os.path.basename(m["path"]): m for m in r["models"][1:]}


def test_stories(tmp):
    out = {}
    for t in ("g4", "g3", "g2", "q4_0", "q8_0", "q4_k"):
        out[t] = os.path.join(tmp, "stories-%s.gguf" % t)
        p = run("quantize", "-m", STORIES, "-o", out[t], "--type", t, "-t", "1")
        check(p.returncode == 0 and b"bits per weight" in p.stdout, "quantize %s: %r" % (t, p.stderr[-300:]))
    types = tensor_types(out["g4"])
    # Rows of 64 take groups of 64 (G4_64 = 229); ffn_down (rows of 172)
    # fits no block type and falls back to F16; norms stay F32; the output
    # projection gets Q8_0.
    check(types.get("blk.0.attn_q.weight") == 229 and types.get("token_embd.weight") == 229,
          "g4 matrices are G4_64 (id 229): %r" % types.get("blk.0.attn_q.weight"))
    check(types.get("blk.0.ffn_down.weight") == 1 and types.get("blk.0.attn_norm.weight") == 0
          and types.get("output.weight") == 8, "fallbacks and kept types: %r" % types)
    check(tensor_types(out["g2"]).get("blk.1.ffn_up.weight") == 227, "g2 matrices are G2_64 (id 227)")
    # Q4_K needs rows of 256: the fallback of its kind is Q4_1 (id 3).
    check(tensor_types(out["q4_k"]).get("blk.0.attn_k.weight") == 3, "q4_k falls back to Q4_1")

    r = evaluate(STORIES, [STORIES] + [out[t] for t in ("g4", "g3", "g2", "q4_0", "q8_0")])
    if not r:
        return
    self_ = r["stories260K.gguf"]
    check(self_["kl_mean"] == 0 and self_["kl_max"] == 0 and self_["top1"] == 1,
          "F32 against itself: KL exactly 0, top-1 100%%: %r" % self_)
    kl = {t: r["stories-%s.gguf" % t]["kl_mean"] for t in ("g4", "g3", "g2", "q4_0", "q8_0")}
    check(kl["g2"] > kl["g3"] > kl["g4"] > kl["q8_0"] > 0, "KL ranks by bits: %r" % kl)
    check(kl["q4_0"] > kl["q8_0"] and kl["q4_0"] < 1, "Q4_0 KL is sane: %r" % kl)
    check(r["stories-g2.gguf"]["top1"] < r["stories-g4.gguf"]["top1"], "top-1 agreement ranks by bits")


def test_reference_kquants(tmp):
    f32 = os.path.join(MODELS, "tiny-llama-f32.gguf")
    # Re-quantizing an already quantized file works from any readable type.
    g4 = os.path.join(tmp, "tiny-from-q4_k-g4.gguf")
    p = run("quantize", "-m", os.path.join(MODELS, "tiny-llama-q4_k.gguf"), "-o", g4, "--type", "g4", "-t", "1")
    check(p.returncode == 0, "quantize from Q4_K: %r" % p.stderr[-300:])
    check(tensor_types(g4).get("blk.0.ffn_up.weight") == 226, "tiny-llama matrices are G4_128 (id 226)")
    names = ["tiny-llama-q2_k.gguf", "tiny-llama-q4_k.gguf", "tiny-llama-q6_k.gguf"]
    r = evaluate(f32, [os.path.join(MODELS, n) for n in names] + [g4])
    if r:
        kl = [r[n]["kl_mean"] for n in names]
        check(kl[0] > kl[1] > kl[2] > 0, "reference K-quants rank by bits: %r" % kl)


def test_bad_input(tmp):
    out = os.path.join(tmp, "x.gguf")
    for args, code, what in (
        (["quantize", "-m", STORIES, "-o", out, "--type", "q2_k"], 2, "a type sluice cannot write"),
        (["quantize", "-m", STORIES, "-o", out, "--type", "g5"], 2, "an unknown type"),
        (["quantize", "-m", STORIES, "-o", out, "--type", "g4", "--group", "96"], 2, "a bad group"),
        (["quantize", "-m", os.path.join(tmp, "missing.gguf"), "-o", out, "--type", "g4"], 1, "a missing model"),
        (["eval", "--ref", STORIES, "--prompts", PROMPTS, "-m", os.path.join(MODELS, "tiny-qwen2-q4_k_m.gguf")],
         1, "another vocabulary"),
        (["eval", "--ref", STORIES, "--prompts", os.devnull, "-m", STORIES], 1, "an empty prompts file"),
        (["eval", "--ref", STORIES, "-m", STORIES], 2, "no prompts"),
    ):
        p = run(*args)
        check(p.returncode == code and not crashed(p) and p.stderr, "%s: exit %d, want %d: %r"
              % (what, p.returncode, code, p.stderr[-200:]))
    check(not os.path.exists(out), "no output left behind by a failed quantize")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        test_stories(tmp)
        test_reference_kquants(tmp)
        test_bad_input(tmp)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
