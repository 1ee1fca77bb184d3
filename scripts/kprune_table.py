#!/usr/bin/env python3
"""Markdown table of a K-prune sweep: scripts/kprune_table.py EXP_DIR/summary.jsonl [EXP_DIR/bench.jsonl]

summary.jsonl: one results.json per line (scripts/kprune_experiment.sh). (Widths of the 4-layer, H=256, 4-head, FFN-1024 mini model are assumed for the s=128 column.)
bench.jsonl (optional):
{"model": DIR, ...bench output...} lines from a separate, interleaved timing pass; when given, its
figures replace the ones taken during the sweep."""
import json
import os
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
bench = {}
if len(sys.argv) > 2:
    for l in open(sys.argv[2]):
        if l.strip():
            b = json.loads(l)
            bench.setdefault(os.path.basename(b["model"].rstrip("/")), []).append(b)


def best(name, fallback):
    runs = [b for n, v in bench.items() if n == name or n.startswith(name + "-t") for b in v]
    if not runs:
        return fallback["min_ms"], fallback["median_ms"]
    return min(r["min_ms"] for r in runs), sorted(r["median_ms"] for r in runs)[len(runs) // 2]


# FLOPs kept at the benchmark's length (s = 128), for the mini model's widths (H = 256, d_h = 64).
H, DH, S = 256, 64, 128.0


def flops_at(layers, s):
    return sum(l["heads"] * (8 * s * H * DH + 4 * s * s * DH) + l["neurons"] * 4 * s * H for l in layers)


print("| task | c | FLOPs kept | at s=128 | metric | dense | pruned | retained | heads per layer | neurons per layer | "
      "prune s | dense ms (min / median) | pruned ms (min / median) | speed-up (min) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    d_min, d_med = best("teacher-" + r["task"], r["bench_dense"])
    p_min, p_med = best(f"prune-{r['task']}-{r['constraint']}", r["bench_pruned"])
    heads = " ".join(str(l["heads"]) for l in r["layers"])
    neurons = " ".join(str(l["neurons"]) for l in r["layers"])
    dense_layers = [{"heads": 4, "neurons": 1024}] * len(r["layers"])
    kept128 = flops_at(r["layers"], S) / flops_at(dense_layers, S)
    ret = r["metric_after"] / r["metric_before"] if r["metric_before"] else float("nan")
    print(f"| {r['task']} | {r['constraint']} | {r['flops_after'] / r['flops_before']:.3f} | {kept128:.3f} | {r['metric']} | "
          f"{r['metric_before']:.4f} | {r['metric_after']:.4f} | {100 * ret:.1f}% | {heads} | {neurons} | "
          f"{r['seconds']:.0f} | {d_min:.0f} / {d_med:.0f} | {p_min:.0f} / {p_med:.0f} | {d_min / p_min:.2f}x |")
