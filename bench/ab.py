#!/usr/bin/env python3
"""Interleaved A/B of `minibridge bench` between builds (or CPU levels) on one model.

    bench/ab.py --model DIR [--rounds 5] [--threads 2] [--batches 8,1] [--precisions f32,bf16,int8]
                LABEL=BINARY[@MB_CPU] ...

Each round runs every (batch, precision) on every binary in turn, the order rotating from round
to round, so that the machine's phases hit all of them alike; a binary given as PATH@LEVEL runs with MB_CPU=LEVEL. Prints a Markdown
table: per binary the median over rounds of per-round median ms, and the median (range) over
rounds of its per-round ratio to the first binary. A precision a binary has no kernel for here
is shown as "—". Shapes: --seq 128, random ids (minibridge bench's defaults).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def run(binary, level, model, batch, precision, threads):
    iters = 5 if batch >= 8 else 20
    cmd = [binary, "bench", "--model", model, "--batch", str(batch), "--seq", "128", "--threads", str(threads),
           "--iters", str(iters), "--warmup", "2"]
    if precision != "f32":
        cmd.append("--" + precision)
    env = dict(os.environ)
    if level:
        env["MB_CPU"] = level
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])["median_ms"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="8,1")
    ap.add_argument("--precisions", default="f32,bf16,int8")
    ap.add_argument("binaries", nargs="+", help="LABEL=BINARY[@MB_CPU]")
    a = ap.parse_args()
    bins = []
    for spec in a.binaries:
        label, _, path = spec.partition("=")
        path, _, level = path.partition("@")
        bins.append((label, path, level))
    batches = [int(b) for b in a.batches.split(",")]
    precisions = a.precisions.split(",")
    times = {}  # (label, batch, precision) -> [ms per round]
    for rnd in range(a.rounds):
        for batch in batches:
            for p in precisions:
                for i in range(len(bins)):  # the order rotates from round to round
                    label, path, level = bins[(i + rnd) % len(bins)]
                    ms = run(path, level, a.model, batch, p, a.threads)
                    times.setdefault((label, batch, p), []).append(ms)
        print(f"round {rnd + 1}/{a.rounds} done", file=sys.stderr, flush=True)
    ref = bins[0][0]
    print(f"| batch × 128 | precision | build | median ms | / {ref} per round: median (range) |")
    print("|---|---|---|---:|---|")
    for batch in batches:
        for p in precisions:
            for label, _, _ in bins:
                t, r = times[(label, batch, p)], times[(ref, batch, p)]
                if any(x is None for x in t):
                    print(f"| {batch} | {p} | {label} | — | — |")
                    continue
                ratios = [x / y for x, y in zip(t, r) if y is not None]
                rat = (f"{statistics.median(ratios):.3f} ({min(ratios):.2f}–{max(ratios):.2f})" if ratios else "—")
                print(f"| {batch} | {p} | {label} | {statistics.median(t):.1f} | {rat} |")


if __name__ == "__main__":
    main()
