#!/usr/bin/env python3
"""Independent safetensors reader, written from the format spec (the safetensors package is not
needed): parses and strictly validates FILE, rebuilds every tensor with torch.frombuffer and prints a
JSON summary {"metadata": {...}, "tensors": {name: {"dtype", "shape", "values"}}}.

    check_safetensors.py FILE [EXPECTED.json]

With EXPECTED.json (same layout as the summary) it exits 1 unless the file matches it exactly.
Any format violation exits 2 with a message on stderr.
"""
import json
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I32": torch.int32, "I64": torch.int64, "F64": torch.float64,
          "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def fail(msg):
    sys.stderr.write(f"{sys.argv[1]}: {msg}\n")
    sys.exit(2)


def no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            fail(f"duplicate key {k!r}")
        d[k] = v
    return d


def is_uint(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def read(path):
    blob = open(path, "rb").read()
    if len(blob) < 8:
        fail("shorter than 8 bytes")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        fail("header length past end of file")
    raw = blob[8:8 + n]
    if not raw.startswith(b"{"):
        fail("header must start with '{'")
    if raw.rstrip(b" ") != raw.rstrip():
        fail("header padding must be spaces")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        fail(f"bad header: {e}")
    data = memoryview(blob)[8 + n:]

    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        fail("__metadata__ must map strings to strings")

    tensors, spans = {}, []
    for name, e in header.items():
        if not isinstance(e, dict) or e.get("dtype") not in DTYPES:
            fail(f"{name}: bad entry or dtype")
        shape, offs = e.get("shape"), e.get("data_offsets")
        if not isinstance(shape, list) or not all(is_uint(d) for d in shape):
            fail(f"{name}: bad shape")
        if not (isinstance(offs, list) and len(offs) == 2 and all(is_uint(o) for o in offs)
                and offs[0] <= offs[1] <= len(data)):
            fail(f"{name}: bad data_offsets")
        dt = DTYPES[e["dtype"]]
        numel = 1
        for d in shape:
            numel *= d
        if offs[1] - offs[0] != numel * torch.empty((), dtype=dt).element_size():
            fail(f"{name}: byte size does not match shape")
        spans.append((offs[0], offs[1], name))
        chunk = bytearray(data[offs[0]:offs[1]])  # frombuffer refuses empty buffers
        t = torch.frombuffer(chunk, dtype=dt) if chunk else torch.empty(0, dtype=dt)
        tensors[name] = {"dtype": e["dtype"], "shape": shape, "tensor": t.reshape(shape)}

    # The data buffer must be tiled exactly: no overlaps, no holes, nothing trailing.
    pos = 0
    for begin, end, name in sorted(spans):
        if begin != pos:
            fail(f"{name}: overlap or hole at byte {pos}")
        pos = end
    if pos != len(data):
        fail("data buffer not fully covered")
    return metadata, tensors


def main():
    metadata, tensors = read(sys.argv[1])
    summary = {"metadata": metadata, "tensors": {}}
    for name, t in tensors.items():
        x = t["tensor"]
        values = (x.double() if x.is_floating_point() else x).flatten().tolist()
        summary["tensors"][name] = {"dtype": t["dtype"], "shape": t["shape"], "values": values}
    print(json.dumps(summary))
    if len(sys.argv) > 2:
        expected = json.load(open(sys.argv[2]))
        if expected != summary:
            sys.stderr.write(f"mismatch:\n expected {json.dumps(expected)}\n got      {json.dumps(summary)}\n")
            sys.exit(1)


if __name__ == "__main__":
    main()
