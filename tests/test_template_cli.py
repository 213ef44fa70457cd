#!/usr/bin/env python3
"""End-to-end tests of `sluice template` and `sluice chat`:
- `sluice template` prints every reference case of ../shared/testdata/templates
  byte for byte (or exits 1 with the template's message), reads variables
  (tools) from an object, and refuses bad input with a message and exit 1/2;
- `sluice chat` on stories260K with piped stdin: a built-in template when the
  model has none, the model's own template when it has one (a copy of
  stories260K with tokenizer.chat_template added), the KV cache reused across
  turns with the same reply as `generate` on the whole rendering, /reset, and
  errors.

usage: test_template_cli.py SLUICE_BINARY TESTDATA_DIR JINJA_CASES_JSON
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

from sltest import crashed

SLUICE, TESTDATA, CASES = sys.argv[1], sys.argv[2], sys.argv[3]
TEMPLATES = os.path.join(TESTDATA, "templates")
STORIES = os.path.join(TESTDATA, "models", "stories260K.gguf")
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what, file=sys.stderr)


def run(*args, stdin=None, timeout=120):
    return subprocess.run([SLUICE, *args], input=stdin, capture_output=True, timeout=timeout)


def test_reference_cases(tmp):
    n = 0
    for f in sorted(os.listdir(TEMPLATES)):
        if not f.endswith(".cases.json"):
            continue
        jinja = os.path.join(TEMPLATES, f[:-len(".cases.json")] + ".jinja")
        with open(os.path.join(TEMPLATES, f), encoding="utf-8") as fh:
            cases = json.load(fh)
        for i, c in enumerate(cases):
            msgs = os.path.join(tmp, "messages.json")
            with open(msgs, "w", encoding="utf-8") as fh:
                json.dump(c["messages"], fh)
            args = ["template", "--template-file", jinja, "--messages", msgs, "--bos", c["bos_token"], "--eos",
                    c["eos_token"]]
            if c["add_generation_prompt"]:
                args.append("--add-generation-prompt")
            p = run(*args)
            if "error" in c:
                check(p.returncode == 1 and c["error"].encode() in p.stderr and p.stdout == b"",
                      "%s case %d: exit 1 with '%s': %d %r" % (f, i, c["error"], p.returncode, p.stderr[-200:]))
            else:
                check(p.returncode == 0 and p.stdout == c["expected"].encode("utf-8"),
                      "%s case %d renders exactly: %d %r" % (f, i, p.returncode, p.stdout[:120]))
            n += 1
    check(n >= 48, "all reference cases ran (%d)" % n)


def test_variables_and_stdin(tmp):
    """An object of variables (tools) and --messages - give what jinja2 gave."""
    with open(CASES, encoding="utf-8") as fh:
        cases = {c["name"]: c for c in json.load(fh)["cases"]}
    for name in ("qwen_tools", "llama31_tools", "command_r_documents"):
        c = cases[name]
        variables = dict(c["vars"])
        agp = variables.pop("add_generation_prompt", False)
        args = ["template", "--template-file", os.path.join(TEMPLATES, c["template_file"]), "--messages", "-"]
        if agp:
            args.append("--add-generation-prompt")
        p = run(*args, stdin=json.dumps(variables).encode())
        check(p.returncode == 0 and p.stdout == c["expected"].encode("utf-8"),
              "%s through stdin with tools: %d %r" % (name, p.returncode, p.stderr[-300:]))
    # a built-in by name, with the model's BOS/EOS texts
    msgs = os.path.join(tmp, "m.json")
    with open(msgs, "w") as fh:
        json.dump([{"role": "user", "content": "Hi"}], fh)
    p = run("template", "-m", STORIES, "--chat-template", "llama3", "--messages", msgs, "--add-generation-prompt")
    want = b"<s><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    check(p.returncode == 0 and p.stdout == want, "built-in llama3 with the model's BOS: %r" % p.stdout)


def test_bad_input(tmp):
    msgs = os.path.join(tmp, "ok.json")
    with open(msgs, "w") as fh:
        json.dump([{"role": "user", "content": "Hi"}], fh)
    bad_json = os.path.join(tmp, "bad.json")
    with open(bad_json, "w") as fh:
        fh.write('[{"role": "user", "content": "Hi"')
    not_list = os.path.join(tmp, "notlist.json")
    with open(not_list, "w") as fh:
        json.dump({"role": "user"}, fh)
    syntax = os.path.join(tmp, "syntax.jinja")
    with open(syntax, "w") as fh:
        fh.write("{% for m in messages %}\n{{ m.content }\n")
    runtime = os.path.join(tmp, "runtime.jinja")
    with open(runtime, "w") as fh:
        fh.write("{{ messages[0].content + 1 }}")
    chatml = ["--chat-template", "chatml"]
    cases = [
        (["template", "--messages", msgs], 2, b"--template-file"),
        (["template", *chatml], 2, b"--messages"),
        (["template", *chatml, "--messages", msgs, "extra"], 2, b"unexpected"),
        (["template", *chatml, "--messages", msgs, "--frobnicate"], 2, b""),
        (["template", *chatml, "--messages", os.path.join(tmp, "missing.json")], 1, b"missing.json"),
        (["template", *chatml, "--messages", bad_json], 1, b"not valid JSON"),
        (["template", *chatml, "--messages", not_list], 1, b"array of messages"),
        (["template", "--template-file", syntax, "--messages", msgs], 1, b"line 2"),
        (["template", "--template-file", runtime, "--messages", msgs], 1, b"can only concatenate str"),
        (["template", "--template-file", os.path.join(tmp, "nope.jinja"), "--messages", msgs], 1, b"nope.jinja"),
        (["template", "--chat-template", "nonesuch", "--messages", msgs], 1, b"nonesuch"),
        (["template", "-m", STORIES, "--messages", msgs], 1, b"--chat-template"),
        (["template", "-m", os.path.join(tmp, "missing.gguf"), "--messages", msgs], 1, b"missing.gguf"),
    ]
    for args, code, msg in cases:
        p = run(*args)
        check(p.returncode == code and msg in p.stderr and not crashed(p),
              "%s: exit %d (want %d), stderr %r" % (" ".join(args[1:]), p.returncode, code, p.stderr[-300:]))
    p = run("template", "--help")
    check(p.returncode == 0 and b"--add-generation-prompt" in p.stdout, "template --help")


def gguf_with_template(src, dst, template):
    """Copies a GGUF file adding the string key tokenizer.chat_template."""
    with open(src, "rb") as fh:
        data = fh.read()
    magic, version, n_tensors, n_kv = struct.unpack_from("<IIQQ", data, 0)
    assert magic == 0x46554747 and version in (2, 3)
    pos = 24
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    alignment = 32

    def skip_string(p):
        (n,) = struct.unpack_from("<Q", data, p)
        return p + 8 + n

    def skip_value(p, t):
        if t in sizes:
            return p + sizes[t]
        if t == 8:
            return skip_string(p)
        et, count = struct.unpack_from("<IQ", data, p)
        p += 12
        for _ in range(count):
            p = skip_value(p, et)
        return p

    for _ in range(n_kv):
        (klen,) = struct.unpack_from("<Q", data, pos)
        key = data[pos + 8:pos + 8 + klen]
        pos += 8 + klen
        (t,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if key == b"general.alignment":
            (alignment,) = struct.unpack_from("<I", data, pos)
        pos = skip_value(pos, t)
    kv_end = pos
    for _ in range(n_tensors):
        pos = skip_string(pos)
        (n_dims,) = struct.unpack_from("<I", data, pos)
        pos += 4 + 8 * n_dims + 4 + 8
    infos_end = pos
    data_start = (infos_end + alignment - 1) // alignment * alignment
    key = b"tokenizer.chat_template"
    value = template.encode("utf-8")
    new_kv = struct.pack("<Q", len(key)) + key + struct.pack("<I", 8) + struct.pack("<Q", len(value)) + value
    head = struct.pack("<IIQQ", magic, version, n_tensors, n_kv + 1) + data[24:kv_end] + new_kv + \
        data[kv_end:infos_end]
    head += b"\0" * ((-len(head)) % alignment)
    with open(dst, "wb") as fh:
        fh.write(head + data[data_start:])


def chat(model, lines, *extra):
    return run("chat", "-m", model, "-n", "16", "--temp", "0", "-t", "1", *extra, stdin=lines.encode())


def test_chat(tmp):
    # no template in the model: refused with advice, then a built-in
    p = chat(STORIES, "Hello\n")
    check(p.returncode == 1 and b"--chat-template" in p.stderr and not crashed(p),
          "chat without a template says to use --chat-template: %r" % p.stderr[-300:])
    p1 = chat(STORIES, "Once upon a time\n", "--chat-template", "chatml")
    check(p1.returncode == 0 and p1.stdout.endswith(b"\n") and len(p1.stdout) > 1,
          "one turn with chatml: %d %r" % (p1.returncode, p1.stderr[-300:]))
    r1 = p1.stdout[:-1]
    p2 = chat(STORIES, "Once upon a time\nThe cat\n", "--chat-template", "chatml")
    check(p2.returncode == 0 and p2.stdout.startswith(r1 + b"\n"), "two turns, the first reply unchanged")
    r2 = p2.stdout[len(r1) + 1:-1]
    check(b"turn 2: 0 cached" not in p2.stderr and b"turn 2:" in p2.stderr,
          "the KV cache is reused on turn 2: %r" % p2.stderr[-400:])
    # turn 2 from the cache = generate on the whole rendering
    conv = os.path.join(tmp, "conv.json")
    with open(conv, "w", encoding="utf-8") as fh:
        json.dump([{"role": "user", "content": "Once upon a time"},
                   {"role": "assistant", "content": r1.decode("utf-8")},
                   {"role": "user", "content": "The cat"}], fh)
    p = run("template", "-m", STORIES, "--chat-template", "chatml", "--messages", conv, "--add-generation-prompt")
    prompt = os.path.join(tmp, "prompt.txt")
    with open(prompt, "wb") as fh:
        fh.write(p.stdout)
    g = run("generate", "-m", STORIES, "-f", prompt, "-n", "16", "--temp", "0", "-t", "1")
    check(g.returncode == 0 and g.stdout == r2 + b"\n",
          "turn 2 from the cache equals generate on the rendering: %r vs %r" % (g.stdout, r2))
    # /reset: the same question gets the same answer, from an empty cache
    p = chat(STORIES, "Once upon a time\n/reset\nOnce upon a time\n", "--chat-template", "chatml")
    check(p.returncode == 0 and p.stdout == r1 + b"\n" + r1 + b"\n" and b"turn 2: 0 cached" in p.stderr,
          "/reset starts over: %r" % p.stdout)

    # a model with its own template (the Phi-3.5 format), used without --chat-template
    with open(os.path.join(TEMPLATES, "microsoft-Phi-3.5-mini-instruct.jinja"), encoding="utf-8") as fh:
        phi = fh.read()
    model = os.path.join(tmp, "stories-phi.gguf")
    gguf_with_template(STORIES, model, phi)
    msgs = os.path.join(tmp, "m.json")
    with open(msgs, "w") as fh:
        json.dump([{"role": "user", "content": "Hi"}], fh)
    p = run("template", "-m", model, "--messages", msgs, "--add-generation-prompt")
    check(p.returncode == 0 and p.stdout == b"<|user|>\nHi<|end|>\n<|assistant|>\n",
          "the model's own template: %r %r" % (p.stdout, p.stderr[-300:]))
    p = chat(model, "Once upon a time\nThe dog\n", "--system", "Tell stories.")
    check(p.returncode == 0 and p.stdout.count(b"\n") >= 2 and b"turn 2:" in p.stderr,
          "chat with the model's template: %d %r" % (p.returncode, p.stderr[-300:]))

    # errors: -p is not a chat flag; a conversation that cannot fit the context
    p = run("chat", "-m", STORIES, "-p", "x")
    check(p.returncode == 2 and b"standard input" in p.stderr, "chat -p refused: %r" % p.stderr[-200:])
    p = chat(STORIES, "word " * 200 + "\n", "--chat-template", "chatml", "-c", "64")
    check(p.returncode == 1 and b"context" in p.stderr and not crashed(p),
          "a message too long for the context: %d %r" % (p.returncode, p.stderr[-300:]))
    p = run("chat", "--help")
    check(p.returncode == 0 and b"--chat-template" in p.stdout, "chat --help")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        test_reference_cases(tmp)
        test_variables_and_stdin(tmp)
        test_bad_input(tmp)
        test_chat(tmp)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
