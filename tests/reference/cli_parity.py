#!/usr/bin/env python3
"""The minibridge binary against the oracles, end to end through its command line: tokenize against
the Hugging Face tokenizer's ids (tests/reference/hf_tokenize.js output), encode and classify against
the PyTorch BERT of bert_reference.py, on the F32 and BF16 fixture models. Made for binaries that
cannot run natively: RUNNER runs them (qemu-user with a CPU model, or nothing).

    cli_parity.py BINARY FIXTURES_DIR EXPECTED_LEVEL [RUNNER ...]

    BINARY          the minibridge binary
    FIXTURES_DIR    the build's fixtures (bert/ from make_bert_fixtures.py, tokenizer/ from hf_tokenize.js)
    EXPECTED_LEVEL  the CPU level --version must report (avx512, avx2, baseline, neon)
    RUNNER          e.g. qemu-x86_64-static -cpu Haswell

The tolerances are the native parity tests' (tests/test_bert_parity.cpp): 1e-4 for F32 weights,
2e-3 for BF16. Then classify with --bf16 and --int8 (the packed low-precision kernels) against the
same float64 logits, within bounds about 3x what they measure natively. Exits 1 on any mismatch,
with one line per check either way.
"""
import json
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bert_reference import bert_forward  # noqa: E402
from check_safetensors import read as read_safetensors  # noqa: E402

# (model, tolerance on hidden states and logits), as in test_bert_parity.cpp.
MODELS = [("tiny_f32", 1e-4), ("tiny_bf16", 2e-3)]
# (flag, bound on logits against float64 for tiny_f32): what reduced precision costs.
PRECISIONS = [("--bf16", 0.02), ("--int8", 0.12)]  # measured 6.5e-3 and 4.0e-2 (AVX2, SSE2)
ENCODE_LINES = 24  # sentences run through encode/classify (the tokenizer check takes them all)

failures = 0


def check(ok, what):
    global failures
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    failures += 0 if ok else 1


def run(cmd, stdin=""):
    r = subprocess.run(cmd, input=stdin.encode(), capture_output=True, timeout=1800)
    if r.returncode != 0:
        sys.exit(f"cli_parity: {' '.join(cmd)} exited {r.returncode}: {r.stderr.decode(errors='replace')}")
    return r.stdout.decode()


def unescape(s):
    """tests/data/tokenizer_strings.txt's escapes: \\u{HEX}, \\t \\n \\r, \\\\ and \\e (nothing)."""
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s):
            c = s[i + 1]
            if c == "u" and s[i + 2:i + 3] == "{":
                end = s.index("}", i)
                out.append(chr(int(s[i + 3:end], 16)))
                i = end + 1
                continue
            out.append({"t": "\t", "n": "\n", "r": "\r", "\\": "\\", "e": ""}.get(c, "\\" + c))
            i += 2
            continue
        out.append(s[i])
        i += 1
    return "".join(out)


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def load_model(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    _, tensors = read_safetensors(os.path.join(d, "model.safetensors"))
    w = {}
    for name, t in tensors.items():  # the fixtures' classifier naming: bert.* + classifier.*
        w[name[len("bert."):] if name.startswith("bert.") else name] = t["tensor"].to(torch.float64)
    return cfg, w


def reference(cfg, w, encodings):
    B, L = len(encodings), max(len(e["input_ids"]) for e in encodings)
    ids = torch.zeros(B, L, dtype=torch.long)
    types = torch.zeros(B, L, dtype=torch.long)
    mask = torch.zeros(B, L, dtype=torch.long)
    for b, e in enumerate(encodings):
        n = len(e["input_ids"])
        ids[b, :n] = torch.tensor(e["input_ids"])
        types[b, :n] = torch.tensor(e["token_type_ids"])
        mask[b, :n] = 1
    with torch.no_grad():
        return bert_forward(cfg, w, ids, types, mask)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    binary, fixtures, level = sys.argv[1], sys.argv[2], sys.argv[3]
    cli = sys.argv[4:] + [binary]
    where = " ".join(sys.argv[4:]) or "native"

    version = run(cli + ["--version"])
    check(f"kernels {level} " in version, f"[{where}] --version reports kernels {level}: "
          + next((l for l in version.splitlines() if l.startswith("cpu:")), "?"))

    # Tokenizer: every case of the uncased vocabulary without truncation that is one stdin line
    cases = [json.loads(l) for l in open(os.path.join(fixtures, "tokenizer", "expected.jsonl"))]
    for c in cases:
        c["source"] = unescape(c["source"])
    # (one line each: no line breaks; at most one TAB, which the CLI and the oracle both read as a pair)
    cases = [c for c in cases if c["variant"] == "uncased" and c["max_len"] == 0 and c["source"].strip()
             and c["source"].count("\t") <= 1
             and not any(ch in c["source"] for ch in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")]
    model = os.path.join(fixtures, "bert", MODELS[0][0])
    got = json_lines(run(cli + ["tokenize", "--model", model], "".join(c["source"] + "\n" for c in cases)))
    same = sum(g["input_ids"] == c["ids"] and g["token_type_ids"] == c["type_ids"] for g, c in zip(got, cases))
    check(len(got) == len(cases) and same == len(cases),
          f"[{where}] tokenize: {same}/{len(cases)} identical to the HF tokenizer")

    sentences = [c for c in cases if len(c["ids"]) > 3][:ENCODE_LINES]
    lines = [c["source"] for c in sentences]
    encodings = [{"input_ids": c["ids"], "token_type_ids": c["type_ids"]} for c in sentences]
    stdin = "".join(l + "\n" for l in lines)
    for name, tol in MODELS:
        d = os.path.join(fixtures, "bert", name)
        cfg, w = load_model(d)
        hidden, _, logits = reference(cfg, w, encodings)
        enc = json_lines(run(cli + ["encode", "--pooling", "none", "--batch", "8", "--model", d], stdin))
        worst = 0.0
        for b, e in enumerate(enc):
            h = torch.tensor(e["last_hidden_state"], dtype=torch.float64)
            worst = max(worst, (h - hidden[b, :h.shape[0]]).abs().max().item())
        check(len(enc) == len(lines) and worst <= tol,
              f"[{where}] encode {name}: {len(enc)} sequences, max |diff| hidden {worst:.2e} (tolerance {tol:g})")
        cls = json_lines(run(cli + ["classify", "--model", d], stdin))
        z = torch.tensor([c["logits"] for c in cls], dtype=torch.float64)
        worst = (z - logits).abs().max().item() if z.shape == logits.shape else float("inf")
        labels = all(c["label"] == f"class_{int(logits[i].argmax())}" for i, c in enumerate(cls))
        check(worst <= tol and labels, f"[{where}] classify {name}: max |diff| logits {worst:.2e}, labels match: {labels}")
        if name != "tiny_f32":
            continue
        for flag, bound in PRECISIONS:
            cls = json_lines(run(cli + ["classify", "--model", d, flag], stdin))
            z = torch.tensor([c["logits"] for c in cls], dtype=torch.float64)
            worst = (z - logits).abs().max().item() if z.shape == logits.shape else float("inf")
            check(0 < worst <= bound, f"[{where}] classify {name} {flag}: max |diff| logits {worst:.2e} (bound {bound:g})")
    print(f"cli_parity [{where}]: {'FAILED' if failures else 'passed'}", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
